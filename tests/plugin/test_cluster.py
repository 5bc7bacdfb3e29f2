"""Cluster, Mesh and NodeHandle on real node processes, through the plugin's own fixtures."""

from __future__ import annotations

import os
import subprocess

import pytest

from fabric import BOOT_STEPS, control
from fabric.errors import ConfigError
from pytest_meshfabric import ClusterSpec, FabricSession, FabricSettings, wait_until
from pytest_meshfabric.backends import netns_unavailable_reason
from pytest_meshfabric.backends.netns import sweep_stale
from pytest_meshfabric.nodes import NodeHandle
from tests.plugin.leftovers import links, namespaces

pytestmark = pytest.mark.slow

SMALL = ["broker", "gateway"]


def test_a_started_cluster_is_ready_converged_and_traced(fabric_factory, spans):
    cluster = fabric_factory(meshes=2, types=SMALL)
    assert [m for m in cluster.meshes] == ["mesh1", "mesh2"]
    gateway = cluster["mesh1"]["gateway"]
    assert gateway.directory_names() == cluster["mesh1"].names | cluster["mesh2"].names
    assert cluster["mesh2"]["broker"].directory_names() == cluster["mesh2"].names
    for node in cluster.nodes:
        assert node.name.startswith(f"{node.mesh}.{node.type}.") and node.name[-6:] == node.node_id[:6]
        boot = {s.name for s in spans.find(service=node.name, trace_id=node.boot_trace(spans.all())[0].trace_id)}
        assert boot == {"mesh.node.ready", *BOOT_STEPS}
        assert node.address.split("@")[1].startswith(node.ip + ":")
    if cluster.backend.name == "netns":
        assert len({n.namespace for n in cluster.nodes}) == len({n.ip for n in cluster.nodes}) == 4
        assert {n.namespace for n in cluster.nodes} <= namespaces()
    with pytest.raises(KeyError, match="mesh1 has no 'compute' node; it has broker, gateway"):
        cluster["mesh1"]["compute"]


def test_kill_then_restart_keeps_the_identity_and_the_others_follow(fabric_factory, spans):
    cluster = fabric_factory(meshes=1, types=["broker", "registry", "compute"])
    victim = cluster["mesh1"]["registry"]
    name, node_id, pid = victim.name, victim.node_id, victim.pid
    victim.kill()
    assert not victim.alive
    cluster.wait_converged(timeout=10)  # --remove-after 2.0: the others drop it
    assert name not in cluster["mesh1"]["broker"].directory_names(alive_only=False)

    victim.restart()
    assert (victim.name, victim.node_id) == (name, node_id) and victim.pid != pid
    cluster.wait_converged(timeout=10)
    assert name in cluster["mesh1"]["compute"].directory_names()
    assert len(spans.traces(root="mesh.node.ready", service=name)) == 2  # two boots, one name


def test_a_paused_node_turns_suspect_and_recovers_when_resumed(fabric_factory):
    cluster = fabric_factory(meshes=1, types=["broker", "compute"])
    broker, compute = cluster["mesh1"]["broker"], cluster["mesh1"]["compute"]

    def state() -> str:
        return next((e["state"] for e in broker.directory() if e["name"] == compute.name), "absent")

    compute.pause()
    try:
        wait_until(lambda: state() in ("suspect", "absent"), 6, "the paused node to turn suspect")
        assert compute.alive and not compute.running
    finally:
        compute.resume()
    wait_until(lambda: state() == "alive", 10, "the resumed node to be alive again")
    assert "ready:" in compute.log_tail(50)
    assert compute.status()["name"] == compute.name


def test_single_nodes_join_each_other_or_a_given_cluster(fabric_factory):
    broker = fabric_factory.node("mesh7", "broker")
    registry = fabric_factory.node("mesh7", "registry")
    wait_until(lambda: registry.directory_names() == {broker.name, registry.name}, 10, "the loose nodes to meet")
    cluster = fabric_factory(types=["broker"])
    joiner = fabric_factory.node("mesh1", "compute", join=cluster)
    cluster.wait_converged()
    assert joiner in cluster.nodes
    assert cluster["mesh1"]["broker"].directory_names() == {joiner.name, cluster["mesh1"]["broker"].name}


def test_a_backbone_only_cluster_sees_other_meshes_through_the_backbone_alone(fabric_factory):
    cluster = fabric_factory(meshes=2, types=["broker", "gateway"], cross_mesh="backbone")
    gw1, gw2 = cluster["mesh1"]["gateway"], cluster["mesh2"]["gateway"]
    assert gw1.watch == gw2.watch == () and gw1.directory_names() == cluster["mesh1"].names
    for gw in (gw1, gw2):  # ready means the backbone converged too
        meshes = {m["mesh"]: m for m in gw.request("backbone")["meshes"]}
        assert {m: s["summary"]["counts"] for m, s in meshes.items()} == {
            "mesh1": {"broker": 1, "gateway": 1}, "mesh2": {"broker": 1, "gateway": 1}}
    gw2.kill()
    wait_until(lambda: cluster.backbone_divergence(gw1), 10, "mesh1's gateway to notice on the backbone")
    gw2.restart()  # rejoins the backbone through the running seats (--backbone-peer)
    cluster.wait_converged()
    assert not cluster.divergence()


def test_a_closed_session_leaves_no_process_namespace_link_or_directory():
    before_ns, before_links = namespaces(), links()
    session = FabricSession(FabricSettings(types=("broker", "compute")), worker="leak")
    cluster = session.start_cluster(ClusterSpec(types=("broker", "compute")))
    pids = [n.pid for n in cluster.nodes]
    root = session.root
    during = namespaces() - before_ns
    session.close()
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)
    assert not root.exists()
    assert namespaces() - before_ns == set()
    assert links() - before_links == set()
    if session.backend.name == "netns":
        assert len(during) == 2  # there was something to remove


def test_the_local_backend_runs_nodes_on_loopback():
    session = FabricSession(FabricSettings(backend="local"), worker="local")
    try:
        cluster = session.start_cluster(ClusterSpec(types=("broker", "gateway")))
        assert {n.ip for n in cluster.nodes} == {"127.0.0.1"} and cluster.backend.network_faults is False
        assert all(n.namespace is None for n in cluster.nodes)
        assert all("@127.0.0.1:" in n.address for n in cluster.nodes)
    finally:
        session.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"types": ("broker", "bogus")}, "unknown node type(s) 'bogus'; choose from broker, gateway"),
    ({"meshes": 0}, "at least one mesh"),
    ({"types": ()}, "at least one node type"),
    ({"meshes": 2, "types": ("gateway",)}, "each mesh needs a seed that watches no other mesh"),
    ({"cross_mesh": "bridge"}, "cross_mesh must be one of watch, backbone, not 'bridge'"),
])
def test_bad_cluster_specs_say_how_to_fix_them(kwargs, message):
    with pytest.raises(ConfigError) as info:
        ClusterSpec(**kwargs)
    assert message in str(info.value)


def test_a_node_whose_control_socket_would_not_fit_is_refused_before_it_starts(tmp_path):
    deep = tmp_path / ("d" * (control.MAX_SOCKET_PATH_BYTES - len(f"{tmp_path}/") - len("/control.sock")))
    assert len(str(deep / "control.sock")) == control.MAX_SOCKET_PATH_BYTES  # the longest that fits
    NodeHandle(None, "mesh1", "broker", deep, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="point TMPDIR at a shorter directory") as refused:
        NodeHandle(None, "mesh1", "broker", deep.with_name(deep.name + "d"), None)  # type: ignore[arg-type]
    assert f"{control.MAX_SOCKET_PATH_BYTES + 1} bytes long" in str(refused.value)


@pytest.mark.skipif(netns_unavailable_reason() is not None, reason="needs root and iproute2 (netns backend)")
def test_leftovers_of_a_killed_run_are_swept_by_the_next():
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now belongs to no process: a run that was SIGKILLed
    stale_ns, stale_link = f"mf-gw9-{dead.pid}-250-2", "mf250v2"
    try:
        subprocess.run(["ip", "netns", "add", stale_ns], check=True)
        subprocess.run(["ip", "link", "add", stale_link, "type", "veth", "peer", "name", "mf250p"], check=True)
        subprocess.run(["ip", "link", "set", stale_link, "alias", f"meshfabric pid={dead.pid}"], check=True)
        assert set(sweep_stale()) == {stale_ns, stale_link}
        assert stale_ns not in namespaces() and stale_link not in links()
    finally:
        subprocess.run(["ip", "netns", "del", stale_ns], capture_output=True)
        subprocess.run(["ip", "link", "del", stale_link], capture_output=True)
