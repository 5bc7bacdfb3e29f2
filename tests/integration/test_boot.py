"""A real node process boots as one trace, exported over OTLP into a real receiver."""

from __future__ import annotations

import re

import pytest

from fabric import control, event_loop, spans
from fabric.gc_settings import ENV, NODE_THRESHOLDS
from fabric.launcher import NodeProcess, NodeStartError
from fabric.node import BOOT_STEPS
from pytest_meshfabric.capture import OtlpReceiver

pytestmark = pytest.mark.slow


def boot_trace(receiver: OtlpReceiver, service: str):
    def complete(spans):
        roots = [s for s in spans if s.name == "mesh.node.ready" and s.service_name == service]
        if not roots:
            return None
        trace = [s for s in spans if s.trace_id == roots[0].trace_id]
        return (roots[0], trace) if len(trace) >= 1 + len(BOOT_STEPS) else None

    return receiver.store.wait_for(complete, timeout=15, description=f"the boot trace of {service}")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_boot_is_one_trace_with_the_five_steps_in_order(spawn, receiver, protocol):
    node = spawn("mesh1", "broker", protocol=protocol)
    assert re.fullmatch(r"mesh1\.broker\.[0-9a-f]{6}", node.name)
    assert node.name.endswith(node.info["node_id"][:6])

    root, trace = boot_trace(receiver, node.name)
    assert root.parent_span_id is None
    steps = sorted((s for s in trace if s.parent_span_id == root.span_id), key=lambda s: s.start_ns)
    assert [s.name for s in steps][: len(BOOT_STEPS)] == list(BOOT_STEPS)
    for span in [root, *steps]:
        assert span.service_name == node.name
        assert span.attributes["mesh.id"] == "mesh1"
        assert span.attributes["node.type"] == "broker"
        assert span.attributes["node.id"] == node.info["node_id"]
        assert span.status != "ERROR"
    for step in steps:  # children nest inside the root and do not overlap each other
        assert root.start_ns <= step.start_ns <= step.end_ns <= root.end_ns
    for before, after in zip(steps, steps[1:]):
        assert before.end_ns <= after.start_ns


def test_restart_with_the_same_identity_keeps_the_name(spawn, tmp_path):
    data = tmp_path / "persistent"
    first = spawn("mesh1", "gateway", data_dir=data)
    name = first.name
    assert first.stop() == 0
    second = spawn("mesh1", "gateway", data_dir=data)
    assert second.name == name
    assert (data / "identity.key").stat().st_mode & 0o777 == 0o600


def test_a_node_process_runs_with_the_node_gc_thresholds_on_uvloop(spawn, tmp_path):
    node = spawn("mesh1", "registry")
    status = control.request_sync(node.control_path, "status")
    assert tuple(status["gc"]["thresholds"]) == NODE_THRESHOLDS
    assert status["event_loop"] == "uvloop"
    assert status["spans"] == spans.path_in_use()  # C where the install built it, as here
    console = spawn("mesh1", "console")  # keeps asyncio's loop unless told (see fabric/event_loop.py)
    assert control.request_sync(console.control_path, "status")["event_loop"] == "asyncio"
    kept = NodeProcess("mesh1", "registry", tmp_path / "kept", env={ENV: "default", event_loop.ENV: "asyncio"})
    try:
        kept.start().wait_ready(timeout=20)
        status = control.request_sync(kept.control_path, "status")
        assert tuple(status["gc"]["thresholds"]) == (700, 10, 10)  # CPython's
        assert len(status["gc"]["collections"]) == 3
        assert status["event_loop"] == "asyncio"
    finally:
        kept.stop()


@pytest.mark.parametrize("variable, value", [(event_loop.ENV, "trio"), (spans.SPAN_CORE_ENV, "fastest")])
def test_a_bad_choice_stops_the_node_before_it_boots(tmp_path, variable, value):
    node = NodeProcess("mesh1", "registry", tmp_path / "bad", env={variable: value})
    try:
        with pytest.raises(NodeStartError, match=rf"exited with 2 before ready(.|\n)*{variable}='{value}'"):
            node.start().wait_ready(timeout=20)
    finally:
        node.stop()


def test_a_node_with_spans_in_python_says_so(tmp_path):
    node = NodeProcess("mesh1", "registry", tmp_path / "py", env={spans.SPAN_CORE_ENV: "python"})
    try:
        node.start().wait_ready(timeout=20)
        assert control.request_sync(node.control_path, "status")["spans"] == "Python"
    finally:
        node.stop()


@pytest.mark.parametrize("variable", ["MESHFABRIC_OTLP_ENCODER", "MESHFABRIC_OTLP_TRANSPORT", "MESHFABRIC_OTLP_EXPORT"])
def test_a_bad_otlp_choice_stops_an_exporting_node_before_it_is_ready(tmp_path, variable):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", variable: "fastest"}
    node = NodeProcess("mesh1", "registry", tmp_path / "bad", env=env)
    try:
        with pytest.raises(NodeStartError, match=rf"exited with 2 before ready(.|\n)*{variable}='fastest'"):
            node.start().wait_ready(timeout=20)
    finally:
        node.stop()


@pytest.mark.parametrize("export, via", [("auto", "event loop"), ("thread", "SDK thread")])
def test_a_stopping_node_exports_what_it_still_holds(tmp_path, receiver, export, via):
    """With a schedule too long to send anything, only the stop's drain and flush can: the spans
    of the boot and of the stop itself must arrive, from the loop or through the SDK's thread."""
    env = {**receiver.env("http/protobuf", bsp_schedule_delay_ms=600_000), "MESHFABRIC_OTLP_EXPORT": export}
    node = NodeProcess("mesh1", "registry", tmp_path / "n", env=env)
    try:
        node.start().wait_ready(timeout=20)
        assert control.request_sync(node.control_path, "status")["export"]["via"] == via
        assert not receiver.store.find(service=node.name)  # all still held by the node
        assert node.stop() == 0
    finally:
        node.stop()
    for name in ("mesh.node.ready", "mesh.node.stop"):
        receiver.store.wait_for_span(name=name, service=node.name, timeout=10)
