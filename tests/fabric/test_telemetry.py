"""Telemetry: exporter choice from the standard OTEL variables, node labels on spans, the ring."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from fabric import telemetry
from fabric.errors import ConfigError
from fabric.identity import Identity, node_name
from fabric.telemetry import NodeLabels, Telemetry, exporter_from_env, span_to_dict
from pytest_meshfabric.capture import OtlpReceiver

from .counted_exporter import CountedExporter

NODE_ID = Identity.generate().node_id
LABELS = NodeLabels(name=node_name("mesh1", "broker", NODE_ID), mesh="mesh1", type="broker", node_id=NODE_ID)
OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    "OTEL_TRACES_EXPORTER",
    "OTEL_BSP_SCHEDULE_DELAY",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in OTEL_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def made() -> Iterator[list]:
    """Telemetry objects and exporters a test created; shut down at teardown."""
    things: list = []
    yield things
    for thing in things:
        thing.shutdown()


def local_telemetry(made: list) -> Telemetry:
    t = Telemetry(LABELS, exporter=None)
    made.append(t)
    return t


# -- exporter choice -------------------------------------------------------------


def test_no_variables_no_exporter():
    assert exporter_from_env({}) is None


def test_unrelated_variables_no_exporter():
    assert exporter_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "PATH": "/bin"}) is None


def test_endpoint_gives_the_http_exporter(clean_env, made):
    exporter = exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    made.append(exporter)
    assert isinstance(exporter, HttpExporter)


def test_explicit_http_protobuf_gives_the_http_exporter(clean_env, made):
    exporter = exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                  "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    made.append(exporter)
    assert isinstance(exporter, HttpExporter)


def test_grpc_protocol_gives_the_grpc_exporter(clean_env, made):
    exporter = exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                                  "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    made.append(exporter)
    assert isinstance(exporter, GrpcExporter)


def test_traces_endpoint_alone_works(clean_env, made):
    exporter = exporter_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    made.append(exporter)
    assert isinstance(exporter, HttpExporter)


def test_traces_protocol_wins_over_the_general_one(clean_env, made):
    exporter = exporter_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317",
                                  "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
    made.append(exporter)
    assert isinstance(exporter, GrpcExporter)


def test_traces_exporter_none_disables_export():
    assert exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                              "OTEL_TRACES_EXPORTER": "none"}) is None


@pytest.mark.parametrize("protocol", ["http/json", "thrift", "GRPC"])
def test_unknown_protocol_is_a_config_error(protocol):
    with pytest.raises(ConfigError, match="http/protobuf' or 'grpc") as info:
        exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                           "OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    assert repr(protocol) in str(info.value)


# -- spans carry the node's labels -----------------------------------------------


def test_a_setup_made_ahead_gives_the_node_its_parts_and_its_name_wins_in_the_resource(made, monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,service.name=from-env")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "3")
    setup = telemetry.TelemetrySetup()
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "read=late")  # read when the setup was made, not after
    t = Telemetry(LABELS, setup=setup)
    made.append(t)
    assert t.recent is setup.recent and t.provider.id_generator is setup.id_generator
    assert t.provider._span_limits.max_events == 3
    resource = t.provider.resource.attributes
    assert resource["deployment.environment"] == "test" and "read" not in resource
    assert resource["service.name"] == LABELS.name and resource["node.id"] == NODE_ID  # the node's labels last
    assert resource["service.instance.id"] == setup.resource.attributes["service.instance.id"]
    assert dict(resource) == dict(telemetry.node_resource(LABELS, setup.resource).attributes)


def test_spans_carry_resource_and_node_attributes(made):
    t = local_telemetry(made)
    assert not t.exporting
    with t.tracer.start_as_current_span("work", attributes={"extra": 1}):
        pass
    (span,) = t.recent.snapshot()
    assert span.name == "work"
    assert span.resource.attributes["service.name"] == LABELS.name
    assert span.resource.attributes["mesh.id"] == "mesh1"
    assert span.attributes["mesh.id"] == "mesh1"
    assert span.attributes["node.type"] == "broker"
    assert span.attributes["node.id"] == NODE_ID
    assert span.attributes["extra"] == 1


def test_recent_keeps_only_the_last_spans(made):
    t = Telemetry(LABELS, exporter=None, recent_capacity=3)
    made.append(t)
    for i in range(5):
        with t.tracer.start_as_current_span(f"s{i}"):
            pass
    assert [s.name for s in t.recent.snapshot()] == ["s2", "s3", "s4"]


def test_the_ring_size_comes_from_the_environment(made, monkeypatch):
    assert telemetry.recent_capacity_from_env({}) == telemetry.DEFAULT_RECENT_SPANS == 256
    assert telemetry.recent_capacity_from_env({telemetry.RECENT_SPANS_ENV: " 2048 "}) == 2048
    for bad in ("0", "-5", "many"):
        with pytest.raises(ConfigError, match=rf"MESHFABRIC_RECENT_SPANS='{bad}': expected an integer >= 1"):
            telemetry.recent_capacity_from_env({telemetry.RECENT_SPANS_ENV: bad})
    monkeypatch.setenv(telemetry.RECENT_SPANS_ENV, "2")
    t = Telemetry.from_env(LABELS)
    made.append(t)
    for i in range(3):
        with t.tracer.start_as_current_span(f"s{i}"):
            pass
    assert [s.name for s in t.recent.snapshot()] == ["s1", "s2"]


def test_span_to_dict_is_plain_values(made):
    t = local_telemetry(made)
    with t.tracer.start_as_current_span("parent") as parent:
        with t.tracer.start_as_current_span("child"):
            assert telemetry.current_trace_id() == format(parent.get_span_context().trace_id, "032x")
    child, parent_span = t.recent.snapshot()
    d = span_to_dict(child)
    assert d["name"] == "child"
    assert d["service"] == LABELS.name
    assert d["trace_id"] == format(parent_span.get_span_context().trace_id, "032x")
    assert d["parent_span_id"] == format(parent_span.get_span_context().span_id, "016x")
    assert span_to_dict(parent_span)["parent_span_id"] is None
    assert d["attributes"]["node.id"] == NODE_ID
    assert d["end_ns"] >= d["start_ns"] > 0


def test_current_trace_id_is_none_outside_a_span():
    assert telemetry.current_trace_id() is None


# -- real export through the SDK exporters ---------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.mark.parametrize("protocol, exporter_class, transport", [
    ("http/protobuf", HttpExporter, "auto"),  # the SDK's urllib3 transport: a loopback collector
    ("http/protobuf", HttpExporter, "requests"),  # the SDK's default transport
    ("grpc", GrpcExporter, "auto"),
])
def test_spans_reach_a_real_otlp_receiver(receiver, clean_env, made, protocol, exporter_class, transport):
    env = {**receiver.env(protocol), "MESHFABRIC_OTLP_TRANSPORT": transport}
    for key, value in env.items():  # the SDK exporters read os.environ for the endpoint
        clean_env.setenv(key, value)
    exporter = exporter_from_env(env)
    assert isinstance(exporter, exporter_class)
    t = Telemetry(LABELS, exporter)
    made.append(t)
    assert t.exporting
    span_name = f"exported over {protocol} ({transport} transport)"
    with t.tracer.start_as_current_span(span_name) as parent:
        with t.tracer.start_as_current_span(f"{span_name} child"):
            pass
    assert t.flush(10.0)
    got = receiver.store.wait_for_span(name=span_name, timeout=10)
    child = receiver.store.wait_for_span(name=f"{span_name} child", timeout=10)
    assert got.service_name == LABELS.name
    assert got.resource["mesh.id"] == "mesh1"
    assert got.attributes["node.id"] == NODE_ID
    assert got.attributes["node.type"] == "broker"
    assert got.trace_id == format(parent.get_span_context().trace_id, "032x")
    assert child.parent_span_id == got.span_id
    assert receiver.rejected == 0


def test_ids_do_not_repeat_when_the_global_random_is_reseeded():
    """hypothesis re-seeds ``random`` per example: trace ids must not follow it."""
    import random

    telemetry = Telemetry(NodeLabels("m1.broker.abcdef", "m1", "broker", "ab" * 32))
    ids = set()
    for _ in range(3):
        random.seed(0)
        with telemetry.tracer.start_as_current_span("x") as span:
            ids.add(span.get_span_context().trace_id)
    assert len(ids) == 3


def test_ended_lean_spans_are_the_readable_spans_the_processors_get(made):
    t = local_telemetry(made)
    with t.tracer.start_as_current_span("outer", attributes={"a": 1}) as span:
        span.add_event("e", {"k": "v"})
    (got,) = t.recent.snapshot()
    assert got is span and isinstance(got, ReadableSpan)
    assert dict(got.attributes)["a"] == 1 and [e.name for e in got.events] == ["e"]
    span.set_attribute("late", 1)  # frozen once ended
    assert "late" not in got.attributes


def test_a_setup_makes_one_telemetry(made):
    setup = telemetry.TelemetrySetup()
    made.append(Telemetry(LABELS, setup=setup))
    with pytest.raises(ValueError, match="made its Telemetry already"):
        Telemetry(LABELS, setup=setup)


def test_a_setup_no_telemetry_took_shuts_its_exporters_processor_down():
    exporter = CountedExporter()
    setup = telemetry.TelemetrySetup(exporter)
    assert isinstance(setup.exporter, BatchSpanProcessor)  # the SDK's: a worker thread of its own
    setup.shutdown()
    setup.shutdown()
    assert exporter.shutdowns == 1
    with pytest.raises(ValueError, match="or was shut down"):
        Telemetry(LABELS, setup=setup)


def test_a_setups_shutdown_leaves_the_processor_of_the_telemetry_made_from_it_alone():
    exporter = CountedExporter()
    setup = telemetry.TelemetrySetup(exporter)
    made = Telemetry(LABELS, setup=setup)
    setup.shutdown()  # the telemetry's to shut down now
    assert exporter.shutdowns == 0
    made.shutdown()
    assert exporter.shutdowns == 1


def test_a_telemetry_that_fails_to_be_made_leaves_its_setups_processor_to_the_setup(monkeypatch):
    exporter = CountedExporter()
    setup = telemetry.TelemetrySetup(exporter)

    def broken(*args, **kwargs):
        raise RuntimeError("no tracer here")

    monkeypatch.setattr(telemetry, "LeanTracer", broken)  # fails after the provider took the processor
    with pytest.raises(RuntimeError, match="no tracer here"):
        Telemetry(LABELS, setup=setup)
    setup.shutdown()  # what a node whose telemetry failed does
    assert exporter.shutdowns == 1
