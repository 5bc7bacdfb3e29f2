"""A node's boot, in-process on real iroh endpoints (run inside the tests' loopback-only
namespace): the boot trace, the join after it, and a boot that fails at its bind or at its
telemetry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from fabric.errors import ConfigError
from fabric.gossip.net import GossipNet
from fabric.node import BOOT_STEPS, Node
from fabric.node_config import NodeConfig
from fabric.telemetry import TelemetrySetup
from fabric.transport import Transport

from .counted_exporter import CountedExporter


class Made(TelemetrySetup):
    """A node's telemetry setup without an exporter, whose ring (the one the node's telemetry
    records into) the test reads."""

    def spans(self) -> dict:
        return {span.name: span for span in self.recent.snapshot()}


@pytest.mark.asyncio
async def test_a_boot_is_one_trace_of_the_five_steps_in_order(tmp_path: Path):
    made = Made()
    node = Node(NodeConfig("mesh1", "broker", tmp_path), made)
    await node.start()
    try:
        spans = made.spans()
        root = spans["mesh.node.ready"]
        steps = [spans[name] for name in BOOT_STEPS]
        assert all(step.parent.span_id == root.context.span_id for step in steps)
        assert [s.start_time for s in steps] == sorted(s.start_time for s in steps)
        assert root.start_time == steps[0].start_time and root.end_time >= steps[-1].end_time
        assert steps[1].end_time > steps[1].start_time  # endpoint_created: the bind's own time
        assert root.resource.attributes["service.name"] == node.name
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_the_join_is_the_first_thing_the_loop_does_after_the_boot(tmp_path: Path, monkeypatch):
    made = Made()
    node = Node(NodeConfig("mesh1", "broker", tmp_path), made)
    ticks: list[tuple[bool, bool]] = []  # at each tick: the boot trace ended?  inside a trace?
    real_tick = GossipNet._dispatch_tick

    def tick(self: GossipNet) -> None:
        ticks.append(("mesh.node.ready" in made.spans(), trace.get_current_span().get_span_context().is_valid))
        real_tick(self)

    monkeypatch.setattr(GossipNet, "_dispatch_tick", tick)
    await node.start()
    try:
        await asyncio.sleep(0)  # one loop turn
        assert ticks == [(True, False)]  # the first tick: after the boot, outside its trace
        assert node.directory.get(node.node_id) is not None  # the node's own first digest, from it
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_bind_that_fails_ends_the_boot_trace_in_error(tmp_path: Path):
    made = Made()
    node = Node(NodeConfig("mesh1", "broker", tmp_path, bind="192.0.2.1:0"), made)  # no such address here
    with pytest.raises(Exception) as failed:
        await node.start()
    spans = made.spans()  # the telemetry made for the failed boot's trace
    assert spans["mesh.node.ready"].status.status_code is StatusCode.ERROR
    assert "endpoint_created" in spans["mesh.node.ready"].status.description
    assert spans["endpoint_created"].status.status_code is StatusCode.ERROR
    assert str(failed.value) in spans["endpoint_created"].status.description
    assert spans["identity_loaded"].status.status_code is StatusCode.UNSET


@pytest.mark.asyncio
async def test_telemetry_that_cannot_be_made_closes_the_endpoint_just_bound(tmp_path, monkeypatch):
    closed: list[Transport] = []
    close = Transport.close

    async def counted_close(self: Transport) -> None:
        closed.append(self)
        await close(self)

    monkeypatch.setattr(Transport, "close", counted_close)

    def no_telemetry(*args, **kwargs) -> None:
        raise RuntimeError("no telemetry here")

    monkeypatch.setattr("fabric.node.Telemetry", no_telemetry)
    exporter = CountedExporter()
    with pytest.raises(RuntimeError, match="no telemetry here"):
        await Node(NodeConfig("mesh1", "broker", tmp_path), TelemetrySetup(exporter)).start()
    assert len(closed) == 1
    assert exporter.shutdowns == 1  # and the exporter's processor the telemetry would have taken


@pytest.mark.asyncio
async def test_a_node_stopped_unstarted_shuts_its_telemetry_setups_processor_down(tmp_path):
    exporter = CountedExporter()
    node = Node(NodeConfig("mesh1", "broker", tmp_path), TelemetrySetup(exporter))
    assert node.telemetry_setup.exporter is not None
    await node.stop()
    assert exporter.shutdowns == 1


def test_the_telemetry_is_set_up_from_the_environment_when_the_node_is_made(tmp_path, monkeypatch):
    """What the telemetry reads from the environment is read by ``Node()``, not in the boot:
    a bad setting fails there, with the variable's error, before anything is bound."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")
    with pytest.raises(ConfigError, match="unsupported OTEL_EXPORTER_OTLP_PROTOCOL 'thrift'"):
        Node(NodeConfig("mesh1", "broker", tmp_path))
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL")
    monkeypatch.setenv("MESHFABRIC_RECENT_SPANS", "7")
    node = Node(NodeConfig("mesh1", "broker", tmp_path))
    assert node.telemetry is None and node.telemetry_setup.recent._spans.maxlen == 7
    assert node.telemetry_setup.exporter is not None  # the exporter's processor, made (and its modules loaded)
    node.telemetry_setup.exporter.shutdown()
