"""Nodes forked from the fork server are the processes a fresh interpreter would have made."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fabric import control, forkserver
from fabric.errors import ConfigError
from fabric.launcher import NodeProcess, NodeStartError
from tests.integration.conftest import directory_names, wait_until

pytestmark = pytest.mark.slow

EXPORTING = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(("value", "on"), [("", True), ("auto", True), ("on", True), (" OFF ", False)])
def test_the_switch(value, on):
    assert forkserver.enabled({forkserver.ENV: value}) is on


def test_a_bad_switch_names_the_variable():
    with pytest.raises(ConfigError, match="MESHFABRIC_FORK_SERVER='sometimes': expected auto, on or off"):
        forkserver.enabled({forkserver.ENV: "sometimes"})


@pytest.mark.parametrize(("env", "exporting"), [
    ({}, False),
    (EXPORTING, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({**EXPORTING, "OTEL_SDK_DISABLED": "true"}, False),
    ({**EXPORTING, "OTEL_TRACES_EXPORTER": "none"}, False),
    ({**EXPORTING, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, False),
])
def test_the_server_holds_the_exporter_only_for_nodes_that_export(env, exporting):
    modules = forkserver.modules_for(env)
    assert set(forkserver.NODE_MODULES) <= set(modules)
    assert ("fabric.otlp_loop" in modules) is exporting
    assert "aiohttp.web" not in modules and "aiohttp.web" in forkserver.modules_for(env, "console")
    assert "uvloop" in modules and "uvloop" not in forkserver.modules_for(env, "console")  # on asyncio's loop
    for loop_choice in ("asyncio", "bogus"):  # a bad value: the node exits naming it, as before
        assert "uvloop" not in forkserver.modules_for({**env, "MESHFABRIC_EVENT_LOOP": loop_choice})


@pytest.mark.parametrize(("env", "via_requests"), [
    (EXPORTING, False),  # a plain loopback collector: the SDK's urllib3 transport
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://10.200.1.1:4318"}, True),  # the netns backend's bridge
    ({**EXPORTING, "MESHFABRIC_OTLP_TRANSPORT": "requests"}, True),
    ({**EXPORTING, "http_proxy": "http://proxy:3128"}, True),
    ({**EXPORTING, "MESHFABRIC_OTLP_TRANSPORT": "bogus"}, False),  # the node says what is wrong
    ({}, False),  # no export at all
])
def test_the_server_holds_requests_for_nodes_whose_exporter_uses_it(env, via_requests):
    assert ("requests" in forkserver.modules_for(env)) is via_requests


def test_the_server_knows_the_variables_its_imports_read(monkeypatch):
    monkeypatch.delenv("MESHFABRIC_SPAN_CORE", raising=False)
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
    server = forkserver.ForkServer().start()
    try:
        assert server.read_at_import["MESHFABRIC_SPAN_CORE"] is None  # read by the fabric's package import
        assert server.read_at_import["OTEL_PROPAGATORS"] == "tracecontext"
        assert server.can_fork(dict(os.environ))
        assert not server.can_fork({**os.environ, "MESHFABRIC_SPAN_CORE": "python"})
        assert not server.can_fork({**os.environ, "OTEL_PROPAGATORS": "b3"})
        assert not server.can_fork({**os.environ, "PYTHONHASHSEED": "1"})
    finally:
        server.close()


def test_prestart_starts_the_servers_of_a_clusters_node_types_side_by_side():
    env = {**os.environ, **EXPORTING}
    threads = forkserver.prestart(env, ["broker", "gateway", "console"])
    assert len(threads) == 2  # the console's modules, and everyone else's
    for thread in threads:
        thread.join(60)
    for node_type in ("broker", "console"):
        server = forkserver.server_for(env, node_type)
        assert server is not None and server.running
        assert set(server.modules) == set(forkserver.modules_for(env, node_type))
    assert forkserver.prestart({**env, forkserver.ENV: "off"}, ["broker"]) == []
    assert forkserver.prestart({**env, "PYTHONHASHSEED": "0"}, ["broker"]) == []


def test_a_server_that_cannot_start_says_why(tmp_path):
    (tmp_path / "breaks_at_import.py").write_text("raise RuntimeError('the module broke')\n")
    server = forkserver.ForkServer([*forkserver.NODE_MODULES, "breaks_at_import"],
                                   {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))})
    with pytest.raises(forkserver.ForkServerError, match="(?s)did not start.*the module broke"):
        server.start()
    assert not server.running


@pytest.mark.parametrize(("prefix", "expected"), [
    ([], (True, None)),
    (["ip", "netns", "exec", "ns1"], (True, "ns1")),
    (["docker", "exec", "box"], (False, None)),
    (["ip", "netns", "exec"], (False, None)),
])
def test_which_prefixes_a_forked_node_can_stand_for(prefix, expected):
    assert forkserver.netns_of(prefix) == expected


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """``node(name, type="broker", env=None, **kwargs)``: a mesh1 node process, started (not
    waited for); every one is stopped at teardown, whatever the test did."""
    started: list[NodeProcess] = []

    def start(name: str, type: str = "broker", env: dict[str, str] | None = None, **kwargs) -> NodeProcess:
        process = NodeProcess(kwargs.pop("mesh", "mesh1"), type, tmp_path / name, env=env, **kwargs)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
    assert not [p.pid for p in started if p.alive()]


def test_a_forked_node_is_a_process_of_its_own(node):
    broker = node("a", env={"MESHFABRIC_GC_THRESHOLD": "1234,10,10"})
    broker.wait_ready(20)
    assert isinstance(broker.proc, forkserver.ForkedProcess)
    assert broker.info["pid"] == broker.pid != os.getpid()
    assert os.getsid(broker.pid) == broker.pid  # its own session, like start_new_session
    cmdline = Path(f"/proc/{broker.pid}/cmdline").read_bytes()  # as ps shows it: the node, not the server
    assert b"-m fabric node --mesh mesh1 --type broker --data-dir" in cmdline
    assert str(broker.data_dir).encode() in cmdline
    status = control.request_sync(broker.control_path, "status")
    assert status["gc"]["thresholds"] == [1234, 10, 10]  # the node's environment, not the server's
    assert broker.stop() == 0


def test_exit_codes_are_the_processes_own(node):
    killed = node("k")
    killed.wait_ready(20)
    killed.kill()
    assert killed.proc.returncode == -signal.SIGKILL

    unlabelled = node("u", mesh="")
    with pytest.raises(NodeStartError, match="exited with 2 before ready"):
        unlabelled.wait_ready(20)
    assert isinstance(unlabelled.proc, forkserver.ForkedProcess)
    assert "needs a mesh label" in unlabelled.log_tail()


def test_forked_nodes_draw_their_own_random_ids(node):
    first, second = node("1"), node("2")
    for process in (first, second):
        process.wait_ready(20)
    traces = [{s["trace_id"] for s in control.request_sync(p.control_path, "spans")["spans"]} for p in (first, second)]
    assert traces[0] and traces[1] and not traces[0] & traces[1]


def test_forked_nodes_find_each_other(node):
    seed = node("seed", extra=["--heartbeat", "0.2"])
    seed.wait_ready(20)
    joiner = node("gw", "gateway", bootstrap=[seed.address], extra=["--heartbeat", "0.2"])
    joiner.wait_ready(20)
    wait_until(lambda: {seed.name, joiner.name} <= directory_names(seed), 10, "the seed to list the gateway")


def test_other_interpreter_settings_import_time_variables_or_the_switch_start_a_new_process(node):
    for i, env in enumerate(({"PYTHONHASHSEED": "0"}, {forkserver.ENV: "off"},
                             {"MESHFABRIC_SPAN_CORE": "python"})):  # read at import: the server's is unset
        fresh = node(f"fresh-{i}", env=env)
        fresh.wait_ready(20)
        assert isinstance(fresh.proc, subprocess.Popen)


def test_the_server_ends_with_its_client_and_its_children_live_on(tmp_path):
    server = forkserver.ForkServer().start()
    read_end, write_end = os.pipe()
    child = None
    try:
        with open(tmp_path / "node.log", "ab") as log:
            child = server.spawn(["node", "--mesh", "mesh1", "--type", "compute", "--data-dir", str(tmp_path / "c")],
                                 dict(os.environ), write_end, log.fileno())
        os.close(write_end)
        with open(read_end, "rb") as stdout:
            assert b'"event": "ready"' in stdout.readline()
            server.close()
            assert not server.running
            os.kill(child.pid, 0)  # still there
            os.kill(child.pid, signal.SIGKILL)
            with pytest.raises(forkserver.ForkServerError, match="its exit code is lost"):
                child.wait(10)
    finally:
        server.close()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_a_node_forked_into_a_network_namespace_binds_there(node):
    namespace = f"mf-fork-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        inside = node("ns", prefix=["ip", "netns", "exec", namespace])
        inside.wait_ready(20)
        assert isinstance(inside.proc, forkserver.ForkedProcess)
        assert os.stat(f"/proc/{inside.pid}/ns/net").st_ino == os.stat(f"/run/netns/{namespace}").st_ino
        inside.stop()

        missing = node("gone", prefix=["ip", "netns", "exec", f"{namespace}-missing"])
        with pytest.raises(NodeStartError, match="exited with 1 before ready"):
            missing.wait_ready(20)
        assert "cannot start the node" in missing.log_tail() and "missing" in missing.log_tail()
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)
