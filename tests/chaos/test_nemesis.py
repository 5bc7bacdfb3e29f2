"""The nemesis on real clusters: churn, partitions, loss, and that everything is undone (latency: test_latency.py)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from pytest_meshfabric import wait_until
from pytest_meshfabric.nemesis import FaultUnavailable, Nemesis

pytestmark = pytest.mark.fabric(meshes=2)


def rules_of(node) -> list[str]:
    """The MESHFABRIC chain's rules in the node's namespace."""
    done = subprocess.run(["ip", "netns", "exec", node.namespace, "iptables", "-w", "-S", "MESHFABRIC"],
                          capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line.startswith("-A")]


def needs_netns(fabric) -> None:
    if not fabric.backend.network_faults:
        pytest.skip("network faults need the netns backend (root)")


def test_a_partition_between_meshes_splits_directories_and_heal_rejoins_them(fabric, nemesis, spans):
    needs_netns(fabric)
    gateway = fabric["mesh1"]["gateway"]
    mesh2 = fabric["mesh2"].names
    nemesis.partition(["mesh1", "mesh2"])
    wait_until(lambda: not (gateway.directory_names() & mesh2), 10, "mesh1's gateway to drop mesh2's nodes",
               describe=lambda _: str(gateway.directory_names()))
    assert fabric["mesh1"]["broker"].directory_names() == fabric["mesh1"].names  # inside a side, all is well
    nemesis.heal()
    assert all(rules_of(n) == [] for n in fabric.nodes)
    fabric.wait_converged()
    span = spans.wait_for_span(name="nemesis.partition", service="nemesis")
    assert set(span.attributes["nemesis.nodes"]) == fabric["mesh1"].names | mesh2
    assert "partition" in nemesis.report() and "heal" in nemesis.report()


def test_isolate_one_way_and_loss_set_exactly_their_rules_and_remove_them(fabric, nemesis):
    needs_netns(fabric)
    broker, gateway = fabric["mesh1"]["broker"], fabric["mesh1"]["gateway"]
    isolated = nemesis.isolate(fabric["mesh2"]["compute"])
    others = [n for n in fabric.nodes if n is not fabric["mesh2"]["compute"]]
    wait_until(lambda: fabric["mesh2"]["compute"].name not in fabric["mesh2"]["broker"].directory_names(), 10,
               "mesh2's broker to drop the isolated compute node")
    nemesis.heal_event(isolated)
    assert rules_of(fabric["mesh2"]["compute"]) == [] and all(rules_of(n) == [] for n in others)

    nemesis.partition_one_way(broker, gateway)
    assert rules_of(gateway) == [f"-A MESHFABRIC -s {broker.ip}/32 -i eth0 -j DROP"] and rules_of(broker) == []
    nemesis.loss((broker, gateway), 0.3)
    assert any("--probability 0.2999" in r for r in rules_of(broker))  # iptables prints 0.29999999981
    nemesis.loss(fabric["mesh1"]["registry"], 0.5)
    assert len(rules_of(fabric["mesh1"]["registry"])) == 2  # in and out
    nemesis.heal()
    assert all(rules_of(n) == [] for n in fabric.nodes)
    fabric.wait_converged()


def test_churn_kill_restart_pause_spawn_and_teardown_restores_the_cluster(fabric, nemesis, spans):
    broker, compute = fabric["mesh1"]["broker"], fabric["mesh2"]["compute"]
    name = broker.name
    nemesis.kill(broker)
    assert not broker.alive
    nemesis.restart(broker)
    assert broker.name == name and broker.alive
    nemesis.pause(compute)
    wait_until(lambda: compute.name not in fabric["mesh2"]["broker"].directory_names(), 10,
               "the paused node to be removed")
    nemesis.resume(compute)
    spawned = nemesis.spawn("mesh1", "registry")
    fabric.wait_converged()
    assert spawned.name in fabric["mesh1"]["gateway"].directory_names()
    nemesis.stop(fabric["mesh2"]["registry"])  # left down: teardown restarts it
    kinds = [e.kind for e in nemesis.events]
    assert kinds == ["kill", "restart", "pause", "spawn", "stop"]
    assert nemesis.events[2].end is not None  # the pause ended when resumed
    spans.wait_for(lambda s: {"nemesis.kill", "nemesis.spawn", "nemesis.stop"} <= {x.name for x in s})


def test_teardown_removed_what_the_last_test_spawned_and_restarted_what_it_stopped(fabric):
    assert [n.type for n in fabric["mesh1"]] == ["broker", "gateway", "registry", "compute"]
    assert all(n.running for n in fabric.nodes)
    assert not fabric.divergence()


def test_network_faults_on_the_local_backend_raise_a_reason():
    backend = SimpleNamespace(host="127.0.0.1", network_faults=False, name="local")
    cluster = SimpleNamespace(backend=backend, receiver=SimpleNamespace(http_endpoint="http://127.0.0.1:9"),
                              label="c0", nodes=[], meshes={})
    chaos = Nemesis(cluster)  # type: ignore[arg-type]
    with pytest.raises(FaultUnavailable, match="the local backend puts every node on one loopback"):
        chaos.partition([[]])
    chaos._provider.shutdown()
