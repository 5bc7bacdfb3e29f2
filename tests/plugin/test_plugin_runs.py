"""Whole pytest runs with real clusters (pytester subprocesses): what a user of the plugin sees."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from pytest_meshfabric import OtlpReceiver, wait_until
from tests.plugin.conftest import EXAMPLES
from tests.plugin.leftovers import gone

pytestmark = pytest.mark.slow

SMALL = ("--fabric-types", "broker,gateway")

WRONG_SHAPE = '''
from test_cross_mesh import CROSS_MESH_PRODUCE

WRONG = {**CROSS_MESH_PRODUCE, "children": [{**CROSS_MESH_PRODUCE["children"][0], "children": [
    {"name": "resolve mesh2.registry"}, *CROSS_MESH_PRODUCE["children"][0]["children"][1:]]}]}


def test_a_wrong_shape_fails_with_the_tree_diff(fabric_client_sync, spans):
    fabric_client_sync.produce("orders", b"x", to="mesh2.broker")
    trace = spans.wait_for_trace(root="produce orders", until=CROSS_MESH_PRODUCE)
    assert trace == WRONG
'''

# Each test records what it ran on, for the test that runs it to check.
RECORD = '''
import json, os, pathlib

def record(name, fabric, **extra):
    info = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "pid": os.getpid(),
            "ids": [n.node_id for n in fabric.nodes], "pids": [n.pid for n in fabric.nodes],
            "namespaces": [n.namespace for n in fabric.nodes if n.namespace], "root": str(fabric.root),
            "ips": [n.ip for n in fabric.nodes], "meshes": list(fabric.meshes), **extra}
    out = pathlib.Path(os.environ["MF_RECORD"]) / f"{name}.json"
    out.write_text(json.dumps(info))
'''


def records(directory) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in directory.glob("*.json")}


@pytest.fixture
def record_dir(pytester, tmp_path, monkeypatch):
    pytester.makepyfile(recorder=RECORD)
    out = tmp_path / "records"
    out.mkdir()
    monkeypatch.setenv("MF_RECORD", str(out))
    return out


def test_mesh_count_2_runs_the_example_and_a_wrong_shape_fails_with_the_diff(inner, tmp_path):
    inner.pytester.makepyfile(test_cross_mesh=(EXAMPLES / "cross_mesh.py").read_text(), test_wrong=WRONG_SHAPE)
    artifacts = tmp_path / "artifacts"
    result = inner.run("--mesh-count", "2", "--fabric-artifacts", str(artifacts))
    result.assert_outcomes(passed=3, failed=1)
    out = result.stdout.str()
    # the assertion names the first mismatch; the report section shows the trees side by side
    result.stdout.fnmatch_lines([
        "E * the trace does not have the expected shape*",
        "E * first mismatch: resolve mesh2.registry: name: expected 'resolve mesh2.registry', got *",
        "*- meshfabric: trace check that failed -*",
        "*expected*| actual",
        "   produce orders *client.* PRODUCER * | produce orders *client.* PRODUCER",
        ">>         resolve mesh2.registry * |         resolve mesh2.broker *mesh1.gateway.* INTERNAL",
        "* |   ^ name: expected 'resolve mesh2.registry', got 'resolve mesh2.broker'",
        "           send orders PRODUCER * |         send orders *mesh1.gateway.* PRODUCER",
    ])
    assert "meshfabric: node logs of cluster c1" in out and "ready: mesh2.broker." in out
    [folder] = list(artifacts.iterdir())
    assert folder.name == "test_wrong.py_test_a_wrong_shape_fails_with_the_tree_diff"
    [text] = folder.glob("*.txt")
    [jaeger] = folder.glob("*.json")
    assert text.stem == jaeger.stem and "resolve mesh2.registry" in text.read_text()
    spans = json.loads(jaeger.read_text())["data"][0]["spans"]
    assert {s["operationName"] for s in spans} >= {"produce orders", "send orders", "receive orders"}
    assert len(list((folder / "logs" / "c1").glob("*.log"))) == 8
    assert inner.leftovers() == []


SCOPES = '''
import pytest
from recorder import record

def test_one(fabric):
    record("one", fabric)

def test_two(fabric):
    record("two", fabric)

@pytest.mark.fabric(meshes=2)
def test_marked(fabric):
    record("marked", fabric)

def test_three(fabric):
    record("three", fabric)
'''


@pytest.mark.parametrize("scope", ["session", "function"])
def test_the_fabric_scope_decides_which_tests_share_a_cluster_and_a_marker_gets_its_own(inner, record_dir, scope):
    inner.pytester.makepyfile(test_scopes=SCOPES)
    inner.pytester.makeini(f"[pytest]\nfabric_scope = {scope}\nfabric_types = broker\n")
    inner.run().assert_outcomes(passed=4)
    seen = records(record_dir)
    assert seen["marked"]["meshes"] == ["mesh1", "mesh2"] and seen["one"]["meshes"] == ["mesh1"]
    assert seen["marked"]["ids"][0] not in seen["one"]["ids"]
    shared = seen["one"]["ids"] == seen["two"]["ids"] == seen["three"]["ids"]
    assert shared is (scope == "session")
    assert inner.leftovers() == []


SNAPSHOT = '''
def test_boot(fabric, spans, trace_snapshot):
    trace = spans.session.wait_for_trace(root="mesh.node.ready", service=fabric["mesh1"]["broker"].name)
    trace_snapshot(trace)
'''


def test_snapshots_are_written_compared_and_required_in_ci(inner, monkeypatch):
    inner.pytester.makepyfile(test_snap=SNAPSHOT)
    snapshot = inner.pytester.path / "__trace_snapshots__" / "test_snap.test_boot.yaml"
    args = ("--fabric-types", "broker")

    monkeypatch.setenv("CI", "true")
    missing = inner.run(*args)
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(["*no trace snapshot at *test_snap.test_boot.yaml, and CI is set*"])
    assert not snapshot.exists()

    inner.run(*args, "--trace-snapshot-update").assert_outcomes(passed=1)
    text = snapshot.read_text()
    assert "service: mesh1.broker.*" in text and "name: gossip_started" in text
    assert "trace_id" not in text and "start_ns" not in text and "duration" not in text
    inner.run(*args).assert_outcomes(passed=1)

    snapshot.write_text(text.replace("name: gossip_started", "name: gossip_joined"))
    changed = inner.run(*args)
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(["*the shape of the trace differs from its snapshot*",
                                  "*>>*gossip_joined*|*gossip_started*"])
    assert inner.leftovers() == []


XDIST = '''
from recorder import record

def test_a(fabric):
    record("a", fabric, bridge=getattr(fabric.backend, "bridge", None))

def test_b(fabric):
    record("b", fabric, bridge=getattr(fabric.backend, "bridge", None))
'''


def test_each_xdist_worker_gets_its_own_cluster_and_namespaces(inner, record_dir):
    inner.pytester.makepyfile(test_x1=XDIST.replace("test_a", "test_a1").replace('"a"', '"a1"'),
                              test_x2=XDIST.replace("test_a", "test_a2").replace('"a"', '"a2"'))
    inner.run("-n", "2", "--dist", "loadfile", *SMALL).assert_outcomes(passed=4)
    seen = records(record_dir)
    by_worker: dict[str, dict] = {}
    for info in seen.values():
        by_worker.setdefault(info["worker"], info)
        assert info["ids"] == by_worker[info["worker"]]["ids"]  # one cluster per worker
    assert sorted(by_worker) == ["gw0", "gw1"]
    one, two = by_worker.values()
    assert one["pid"] != two["pid"] and not set(one["ids"]) & set(two["ids"])
    if one["namespaces"]:
        assert not set(one["namespaces"]) & set(two["namespaces"]) and not set(one["ips"]) & set(two["ips"])
        assert one["bridge"] != two["bridge"]
        assert all(ns.startswith(f"mf-{w}-") for w, info in by_worker.items() for ns in info["namespaces"])
    assert inner.leftovers() == []


FAILING = '''
from recorder import record

def test_fails(fabric):
    record("failing", fabric)
    assert fabric["mesh1"]["gateway"].directory_names() == set(), "a deliberate failure"
'''


def test_a_failing_run_leaves_nothing_behind(inner, record_dir):
    inner.pytester.makepyfile(test_failing=FAILING)
    result = inner.run(*SMALL)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*a deliberate failure*", "*meshfabric: node logs of cluster c1*"])
    info = records(record_dir)["failing"]
    assert gone(info["pids"], info["namespaces"], [info["root"]]) == []
    assert inner.leftovers() == []


BLOCKING = '''
import os, pathlib, threading
from recorder import record

def test_blocks(fabric):
    record("blocked", fabric)
    threading.Event().wait(120)  # the test under interruption: it runs until it is stopped
'''


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_nothing_behind(inner, record_dir, sig):
    inner.pytester.makepyfile(test_blocking=BLOCKING)
    proc = inner.popen(*SMALL)
    try:
        wait_until(lambda: (record_dir / "blocked.json").exists(), 60, "the test to start on its cluster")
        proc.send_signal(sig)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in output
    info = records(record_dir)["blocked"]
    assert gone(info["pids"], info["namespaces"], [info["root"]]) == []
    assert inner.leftovers() == []


def test_fabric_keep_leaves_a_failing_cluster_running_and_says_how_to_remove_it(inner, record_dir):
    inner.pytester.makepyfile(test_failing=FAILING)
    result = inner.run("--fabric-keep", *SMALL)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*meshfabric: kept running (--fabric-keep)*",
                                 "*meshfabric status --data-dir *",
                                 "*remove them with: sh *cleanup.sh*"])
    info = records(record_dir)["failing"]
    assert gone(info["pids"], info["namespaces"], [info["root"]]) != []  # still there
    script = next(line.split("sh ", 1)[1] for line in result.stdout.lines if "remove them with: sh" in line)
    subprocess.run(["sh", script.strip()], check=True)
    wait_until(lambda: not gone(info["pids"], info["namespaces"], [info["root"]]), 10, "the cleanup script")
    assert inner.leftovers() == []


def test_otlp_forward_sends_every_captured_span_on_to_a_collector(inner):
    inner.pytester.makepyfile("def test_up(fabric):\n    pass\n")
    with OtlpReceiver(grpc=False) as collector:
        url = f"{collector.http_endpoint}/v1/traces"
        inner.run("--fabric-types", "broker", "--otlp-forward", url).assert_outcomes(passed=1)
        boot = collector.store.wait_for(lambda spans: [s for s in spans if s.name == "mesh.node.ready"], 10,
                                        "the forwarded boot trace")
    assert boot[0].service_name.startswith("mesh1.broker.")
    assert inner.leftovers() == []


HEAL = '''
def test_breaks_the_shared_cluster(fabric):
    fabric["mesh1"]["gateway"].kill()
    fabric["mesh1"]["broker"].pause()

def test_gets_it_back_whole(fabric):
    assert all(node.running for node in fabric.nodes)
    assert fabric.divergence() == {}
'''


def test_a_node_a_test_broke_is_back_for_the_next_test(inner):
    inner.pytester.makepyfile(test_heal=HEAL)
    inner.run(*SMALL).assert_outcomes(passed=2)
    assert inner.leftovers() == []


START_FAILS = '''
def test_first(fabric):
    pass

def test_second(fabric):
    pass
'''


def test_a_cluster_that_cannot_start_shows_the_node_log_and_is_tried_once(inner):
    inner.pytester.makepyfile(test_start=START_FAILS)
    inner.pytester.makeini("[pytest]\nfabric_types = broker\nfabric_node_args = --no-such-flag\n")
    result = inner.run()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*ClusterStartError: cluster c1 (*) did not become ready: mesh1.broker exited with 2*",
                                 "*unrecognized arguments: --no-such-flag*",
                                 "*(an earlier test tried to start this cluster)*"])
    assert inner.leftovers() == []
