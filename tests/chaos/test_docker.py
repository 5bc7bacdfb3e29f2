"""The docker backend: a container per node; the nemesis's partition and heal, churn and
network disconnect/connect on real containers.

The backend starts a private ``dockerd`` inside the tests' network namespace (``.ci/run``
installs docker.io). Without root, dockerd or the docker client every test here skips with
the reason; ``MESHFABRIC_REQUIRE_DOCKER=1`` turns that skip into a failure.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from fabric.errors import ConfigError
from pytest_meshfabric import reporting, wait_until
from pytest_meshfabric.backends import docker as docker_backend
from pytest_meshfabric.checkers import History, check_directories, check_queue, check_traces
from pytest_meshfabric.cluster import Cluster, ClusterSpec
from pytest_meshfabric.nemesis import Nemesis
from pytest_meshfabric.session import FabricSession
from pytest_meshfabric.settings import FabricSettings

pytestmark = pytest.mark.slow


def _unavailable(reason: str) -> None:
    if os.environ.get("MESHFABRIC_REQUIRE_DOCKER") == "1":
        pytest.fail(f"the docker backend is required here, but {reason}", pytrace=False)
    pytest.skip(f"the docker backend is unavailable: {reason}")


@pytest.fixture(scope="module")
def docker_fabric() -> Iterator[Cluster]:
    """Two meshes of four nodes, each node in a container of its own (its own session and receiver)."""
    reason = docker_backend.unavailable_reason()
    if reason:
        _unavailable(reason)
    session = FabricSession(FabricSettings(backend="docker", mesh_count=2))
    try:
        try:
            assert session.backend.name == "docker"  # opens it: the daemon, the image, the network
        except ConfigError as exc:
            _unavailable(str(exc))
        yield session.start_cluster(ClusterSpec(meshes=2))
    finally:
        session.close()


@pytest.fixture
def docker_nemesis(request: pytest.FixtureRequest, docker_fabric: Cluster) -> Iterator[Nemesis]:
    """A nemesis for the docker cluster; a failing test's report gets the nodes' logs."""
    reporting.involve(request.node, docker_fabric)
    chaos = Nemesis(docker_fabric, on_unavailable=lambda reason: pytest.skip(reason))
    try:
        yield chaos
    finally:
        chaos.close()


def container(cluster: Cluster, node) -> dict:
    """The Docker SDK's view of the node's container (``State``, ``NetworkSettings``, ...)."""
    return cluster.backend.client.api.inspect_container(f"{node.namespace}-node")


def test_every_node_is_a_container_on_the_network_at_its_address(docker_fabric):
    backend = docker_fabric.backend
    assert backend.name == "docker" and backend.host.startswith(docker_backend.PREFIX)
    for node in docker_fabric.nodes:
        state = container(docker_fabric, node)
        assert state["State"]["Running"] and state["Config"]["Labels"]["meshfabric.pid"] == str(os.getpid())
        sandbox = backend.client.api.inspect_container(node.namespace)
        assert state["HostConfig"]["NetworkMode"] == f"container:{sandbox['Id']}"
        assert sandbox["NetworkSettings"]["Networks"][backend.network_name]["IPAddress"] == node.ip
        assert node.address.split("@")[1].startswith(node.ip + ":")
    assert docker_fabric["mesh1"]["gateway"].directory_names() == docker_fabric["mesh1"].names | \
        docker_fabric["mesh2"].names


def test_partition_between_meshes_fails_cross_mesh_produces_and_heal_restores_them(docker_fabric, docker_nemesis):
    gateway, mesh2 = docker_fabric["mesh1"]["gateway"], docker_fabric["mesh2"].names
    history = History(docker_fabric, timeout=2.0)
    try:
        before = history.produce("mesh2.broker")
        assert before.status == "ok", before.describe()

        started = time.monotonic()
        docker_nemesis.partition(["mesh1", "mesh2"])
        applied = time.monotonic() - started
        wait_until(lambda: not (gateway.directory_names(alive_only=False) & mesh2), 15,
                   "mesh1's gateway to drop mesh2's nodes", describe=lambda _: str(gateway.directory_names()))
        assert docker_fabric["mesh1"]["broker"].directory_names() == docker_fabric["mesh1"].names
        cut = history.produce("mesh2.broker")
        assert cut.status == "info", f"a produce across the partition was acknowledged: {cut.describe()}"
        assert history.produce("mesh1.broker").status == "ok"  # inside a side all is well

        started = time.monotonic()
        docker_nemesis.heal()
        docker_fabric.wait_converged(20)
        healed = time.monotonic() - started
        after = history.produce("mesh2.broker")
        assert after.status == "ok", after.describe()

        queue = check_queue(history)
        assert queue.ok and queue.acknowledged == 3, str(queue)
        problems, _ = check_traces(docker_fabric.store, history, docker_nemesis.events)
        assert problems == []  # the cut produce's trace ends in ERROR, the others stitch end to end
        assert check_directories(docker_fabric) == []
        print(f"docker: partition applied in {applied:.2f}s, heal to converged in {healed:.2f}s")
    finally:
        history.close()


def test_kill_pause_and_restart_act_on_the_containers(docker_fabric, docker_nemesis):
    broker, compute = docker_fabric["mesh1"]["broker"], docker_fabric["mesh2"]["compute"]
    api = docker_fabric.backend.client.api
    name, address = broker.name, broker.address
    docker_nemesis.kill(broker)
    assert not broker.alive
    assert not api.containers(all=True, filters={"name": f"{broker.namespace}-node"})  # --rm: gone
    docker_nemesis.restart(broker)
    assert (broker.name, broker.address) == (name, address)  # same identity, address and port
    assert container(docker_fabric, broker)["State"]["Running"]

    docker_nemesis.pause(compute)
    assert container(docker_fabric, compute)["State"]["Paused"]
    wait_until(lambda: compute.name not in docker_fabric["mesh2"]["broker"].directory_names(), 15,
               "the paused container's node to be dropped")
    docker_nemesis.resume(compute)
    assert not container(docker_fabric, compute)["State"]["Paused"]
    docker_fabric.wait_converged(20)


def test_network_disconnect_and_connect_take_a_node_off_and_back(docker_fabric, docker_nemesis):
    backend, registry = docker_fabric.backend, docker_fabric["mesh2"]["registry"]
    broker = docker_fabric["mesh2"]["broker"]
    mark = docker_fabric.store.mark()
    started = time.monotonic()
    event = docker_nemesis.disconnect(registry)
    took = time.monotonic() - started
    assert backend.network_name not in backend.client.api.inspect_container(registry.namespace)[
        "NetworkSettings"]["Networks"]
    wait_until(lambda: registry.name not in broker.directory_names(alive_only=False), 15,
               "mesh2's broker to drop the disconnected registry")
    started = time.monotonic()
    docker_nemesis.heal_event(event)
    took_back = time.monotonic() - started
    sandbox = backend.client.api.inspect_container(registry.namespace)
    assert sandbox["NetworkSettings"]["Networks"][backend.network_name]["IPAddress"] == registry.ip
    links = subprocess.run(["ip", "-n", registry.namespace, "-o", "link", "show"], capture_output=True, text=True)
    assert [line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()] == ["lo", "eth0"]
    docker_fabric.wait_converged(20)
    span = docker_fabric.store.wait_for_span(name="nemesis.disconnect", service="nemesis", since=mark)
    assert list(span.attributes["nemesis.nodes"]) == [registry.name] and span.end_ns > span.start_ns
    print(f"docker: network disconnect {took:.2f}s, connect {took_back:.2f}s")

def test_the_partition_between_meshes_scenario_runs_on_docker(docker_fabric, docker_nemesis):
    """scenarios/test_churn.py's PartitionBetweenMeshes, one short example (CI time is short)."""
    from hypothesis import settings

    from pytest_meshfabric.stateful import machine_settings, run_machine
    from scenarios.test_churn import PartitionBetweenMeshes
    short = settings(machine_settings(), max_examples=2, stateful_step_count=6)
    run_machine(PartitionBetweenMeshes, docker_fabric, docker_nemesis, settings=short)
    print(f"docker: PartitionBetweenMeshes faults:\n{docker_nemesis.report()}")
