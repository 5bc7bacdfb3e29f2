"""The OTLP request encoder against the SDK's: the same message for every span shape (the C
part's own tests: ``test_span_wire.py``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_trace_exporter
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_trace_exporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
)
from opentelemetry.trace.status import Status, StatusCode

from fabric import otlp_encoder, otlp_exporters, propagation, telemetry
from fabric.captured import from_sdk
from fabric.errors import ConfigError
from fabric.lean_span import LeanSpan
from fabric.otlp import decode_body
from fabric.otlp_encoder import encode_request
from fabric.telemetry import Telemetry
from tests.fabric.otlp_spans import (
    LABELS,
    RESOURCES,
    SCOPES,
    assert_same_as_the_sdk,
    decoded,
    encodable_spans,
    spans,
)


@given(st.lists(spans(), max_size=6))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_batch_encodes_as_the_sdk_does(batch):
    assert_same_as_the_sdk(batch)


def test_an_empty_batch():
    assert encode_request([]) == b""
    assert_same_as_the_sdk([])


def test_equal_resources_and_scopes_share_a_group_in_order_of_first_appearance():
    ctx = SpanContext(1, 2, False)
    batch = [ReadableSpan(f"s{i}", ctx, resource=RESOURCES[i % 3], instrumentation_scope=SCOPES[(i + 1) % 3])
             for i in range(9)]
    request = decoded(batch)
    assert [len(rs.scope_spans) for rs in request.resource_spans] == [1, 1]  # RESOURCES[0] == [1]; None scope
    assert_same_as_the_sdk(batch)


def test_an_attribute_it_cannot_encode_is_dropped_and_logged(caplog):
    span = ReadableSpan("s", SpanContext(1, 2, False), resource=RESOURCES[0],
                        attributes={"before": 1, "too.big": 2**64, "thing": object(), "after": "x"})
    with caplog.at_level(logging.ERROR, logger="fabric.otlp_exporters"):
        request = decoded([span])
    kept = [kv.key for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert kept == ["before", "after"]
    assert "too.big" in caplog.text and "thing" in caplog.text
    assert_same_as_the_sdk([span])


def test_a_name_that_is_not_utf8_fails_the_batch_as_with_the_sdk():
    span = ReadableSpan("\ud800", SpanContext(1, 2, False), resource=RESOURCES[0])
    with pytest.raises(UnicodeEncodeError):
        encode_spans([span])
    with pytest.raises(UnicodeEncodeError):  # the exporter logs it and reports the batch failed
        encode_request([span])


def test_a_value_shared_by_the_resource_and_a_span_is_encoded_for_each():
    """The cache of encoded attributes is per message type: a resource attribute is field 1
    of ``Resource``, a span attribute field 9 of ``Span``."""
    span = ReadableSpan("s", SpanContext(1, 2, False), resource=RESOURCES[0], attributes={"mesh.id": "mesh1"})
    for _ in range(2):  # the second time from the cache
        assert_same_as_the_sdk([span])


def test_more_distinct_values_than_the_cache_holds():
    batch = [ReadableSpan("s", SpanContext(1, i + 1, False), resource=RESOURCES[0], attributes={"v": str(i)})
             for i in range(otlp_encoder._CACHE_LIMIT + 10)]
    assert_same_as_the_sdk(batch)
    assert_same_as_the_sdk(batch[:20])


# -- spans as a node makes them --------------------------------------------------


def test_a_nodes_own_spans_encode_as_the_sdk_does(node_spans):
    t, snapshot = node_spans
    tracer = t.tracer
    remote = propagation.extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    with tracer.start_as_current_span("produce", kind=SpanKind.SERVER, attributes={"messaging.system": "meshfabric"}):
        with tracer.start_as_current_span("send t", kind=SpanKind.PRODUCER, attributes={"meshfabric.seq": 3}) as s:
            s.set_attribute("meshfabric.offset", 2**40)
            s.add_event("retry", {"attempt": 2, "ok": False})
            s.add_link(SpanContext(7, 8, False), {"batch.index": 1})  # a link added to a lean span
        with pytest.raises(ValueError), tracer.start_as_current_span("fails"):
            raise ValueError("no such topic")
    with tracer.start_as_current_span("receive t", context=remote, kind=SpanKind.CONSUMER) as s:
        s.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("linked", links=[Link(SpanContext(5, 6, True), {"why": "batch"})]):
        pass  # links: the SDK's span (the lean tracer falls back)
    batch = snapshot()
    assert type(batch[0]) is LeanSpan and type(batch[-1]) is not LeanSpan  # both paths of the encoder
    assert_same_as_the_sdk(batch)


def test_spans_of_the_sdks_own_tracer_encode_as_the_sdk_does():
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCES[2])
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("sdk", "2.0")
    with tracer.start_as_current_span("outer", attributes={"list": [1, 2], "flag": True}) as outer:
        outer.add_event("e", {"x": 1.5})
        with tracer.start_as_current_span("inner", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()
    assert_same_as_the_sdk(list(memory.get_finished_spans()))


# -- the SDK's exporters use it ---------------------------------------------------


@pytest.fixture
def sdk_encoders(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Both exporter modules' ``encode_spans`` (and the C part's use) put back as they were after the test."""
    for module in (http_trace_exporter, grpc_trace_exporter):
        monkeypatch.setattr(module, "encode_spans", encode_spans)
    yield monkeypatch
    otlp_encoder.use_native(True)


@pytest.mark.parametrize("protocol, module", [("http/protobuf", http_trace_exporter), ("grpc", grpc_trace_exporter)])
def test_a_nodes_exporter_encodes_with_it(sdk_encoders, protocol, module):
    exporter = telemetry.exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    exporter.shutdown()
    assert module.encode_spans is not encode_spans
    span = ReadableSpan("s", SpanContext(1, 2, False), resource=RESOURCES[0], attributes={"a": 1})
    encoded = module.encode_spans([span])
    wire = encoded.SerializePartialToString()  # what each exporter sends
    assert ExportTraceServiceRequest.FromString(wire) == encode_spans([span])


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_sdk_encoder_when_asked(sdk_encoders, protocol):
    exporter = telemetry.exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                                            "MESHFABRIC_OTLP_ENCODER": "sdk"})
    exporter.shutdown()
    assert http_trace_exporter.encode_spans is encode_spans
    assert grpc_trace_exporter.encode_spans is encode_spans


@pytest.mark.parametrize("choice, in_use", [("", "C"), ("own", "C"), ("python", "Python"), ("sdk", "SDK")])
def test_which_encoder_is_in_use(sdk_encoders, choice, in_use):
    if in_use == "C" and not otlp_encoder.native_built():
        in_use = "Python"  # an install that could not build it: the same bytes, from Python
    exporter = telemetry.exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                            "MESHFABRIC_OTLP_ENCODER": choice})
    exporter.shutdown()
    assert otlp_exporters.in_use(http_trace_exporter) == in_use
    span = ReadableSpan("s", SpanContext(1, 2, False), resource=RESOURCES[0], attributes={"a": 1})
    assert ExportTraceServiceRequest.FromString(
        http_trace_exporter.encode_spans([span]).SerializePartialToString()) == encode_spans([span])


def test_an_exporter_that_is_not_otlp_has_no_encoder_in_the_status():
    t = Telemetry(LABELS, InMemorySpanExporter())
    try:
        assert t.export_status() == {"via": "SDK thread", "encoder": None}
    finally:
        t.shutdown()


@pytest.mark.parametrize("value", ["fast", "SDK", "protobuf", "c"])
def test_an_unknown_encoder_is_a_config_error(value):
    with pytest.raises(ConfigError, match="MESHFABRIC_OTLP_ENCODER") as info:
        telemetry.exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                     "MESHFABRIC_OTLP_ENCODER": value})
    assert repr(value) in str(info.value)


def test_an_encoder_it_does_not_know_is_left_alone(sdk_encoders, caplog):
    def someone_elses(spans):  # e.g. a newer SDK's, or another patch's
        return encode_spans(spans)

    sdk_encoders.setattr(http_trace_exporter, "encode_spans", someone_elses)
    with caplog.at_level(logging.WARNING, logger="fabric.otlp_exporters"):
        assert otlp_exporters.adopt_in_http_exporter() is False
    assert http_trace_exporter.encode_spans is someone_elses
    assert "not the SDK's encoder" in caplog.text
    assert otlp_exporters.adopt_in_grpc_exporter() is True
    assert otlp_exporters.adopt_in_grpc_exporter() is True  # idempotent


# -- and back: what a receiver makes of it ---------------------------------------

@given(st.lists(encodable_spans, max_size=5))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_receiver_decodes_what_it_encodes_into_the_spans_themselves(batch):
    assert decode_body(encode_request(batch), "application/x-protobuf") == [from_sdk(s) for s in batch]
