"""The OTLP request encoder against the SDK's: the same message for every span shape."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_trace_exporter
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_trace_exporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    Link,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import Attributes

from fabric import otlp_encoder, otlp_exporters, propagation, telemetry
from fabric.captured import from_sdk
from fabric.errors import ConfigError
from fabric.lean_span import FIELDS_IN_C, UNSET_STATUS, LeanSpan
from fabric.otlp import decode_body
from fabric.otlp_encoder import encode_request
from fabric.span_path import span_path_from_env
from fabric.telemetry import NodeLabels, Telemetry

LABELS = NodeLabels("mesh1.broker.abcdef", "mesh1", "broker", "ab" * 32)


def decoded(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_request(spans))


def assert_same_as_the_sdk(spans: list[ReadableSpan]) -> None:
    ours, sdk = decoded(spans), encode_spans(spans)
    assert ours == sdk, f"ours:\n{ours}\nthe SDK's:\n{sdk}"


# -- spans of every shape, built directly ----------------------------------------

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # no lone surrogates
not_utf8 = st.sampled_from(["\ud800", "a\udfffb"])  # a key or value like these: dropped by both
scalars = st.one_of(
    texts, not_utf8, st.booleans(), st.integers(-(2**70), 2**70),  # beyond int64: dropped by both
    st.floats(allow_nan=False), st.binary(max_size=8), st.none(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.tuples(st.integers(), st.integers()),
    st.dictionaries(texts, scalars, max_size=2),  # a kvlist
    st.just(object()),  # no encoding for it: dropped (and logged) by both
)
keys = st.sampled_from(["", "a", "k", "mesh.id", "messaging.system", "ü"]) | texts | not_utf8
attribute_dicts = st.dictionaries(keys, values, max_size=5)
trace_ids = st.integers(1, 2**128 - 1)
span_ids = st.integers(1, 2**64 - 1)
trace_states = st.sampled_from([TraceState(), TraceState([("vendor", "value")]),
                                TraceState([("a", "1"), ("b@x", "2")])])


@st.composite
def span_contexts(draw: st.DrawFn) -> SpanContext:
    return SpanContext(draw(trace_ids), draw(span_ids), draw(st.booleans()),
                       TraceFlags(draw(st.sampled_from([0, 1]))), draw(trace_states))


RESOURCES = [Resource({"service.name": "a", "mesh.id": "mesh1"}), Resource({"service.name": "a", "mesh.id": "mesh1"}),
             Resource({"service.name": "b"}, schema_url="https://opentelemetry.io/schemas/1.21.0"), Resource({})]
SCOPES = [None, InstrumentationScope("meshfabric"), InstrumentationScope("meshfabric"),
          InstrumentationScope("other", "1.0", "https://example.com/schema", {"scope.attr": 1})]


@st.composite
def spans(draw: st.DrawFn, attribute_dicts: st.SearchStrategy[Attributes] = attribute_dicts,
          resources: list[Resource] = RESOURCES, scopes: list[InstrumentationScope | None] = SCOPES) -> ReadableSpan:
    return ReadableSpan(
        name=draw(texts),
        context=draw(span_contexts()),
        parent=draw(st.none() | span_contexts()),
        resource=draw(st.sampled_from(resources)),
        attributes=draw(attribute_dicts),
        events=draw(st.lists(st.builds(Event, texts, attribute_dicts, st.integers(0, 2**64 - 1)), max_size=2)),
        links=draw(st.lists(st.builds(Link, span_contexts(), attribute_dicts), max_size=2)),
        kind=draw(st.sampled_from(SpanKind)),
        status=draw(st.sampled_from([Status(StatusCode.UNSET), Status(StatusCode.OK),
                                     Status(StatusCode.ERROR), Status(StatusCode.ERROR, "it broke: ü")])),
        start_time=draw(st.integers(0, 2**64 - 1)),
        end_time=draw(st.none() | st.integers(0, 2**64 - 1)),
        instrumentation_scope=draw(st.sampled_from(scopes)),
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


@pytest.fixture
def node_spans() -> Iterator[tuple[Telemetry, list[ReadableSpan]]]:
    t = Telemetry(LABELS, recent_capacity=1000)
    yield t, t.recent.snapshot
    t.shutdown()


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

encodable_scalars = st.one_of(texts, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                              st.binary(max_size=8), st.none())
encodable_values = st.one_of(encodable_scalars, st.lists(encodable_scalars, max_size=3),
                             st.dictionaries(texts, encodable_scalars, max_size=2))
encodable_attributes = st.dictionaries(texts, encodable_values, max_size=5)
# One resource and scope (so the request keeps the spans' order), every attribute encodable
# (so none is dropped).
encodable_spans = spans(encodable_attributes, RESOURCES[:1], SCOPES[1:2])


@given(st.lists(encodable_spans, max_size=5))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_receiver_decodes_what_it_encodes_into_the_spans_themselves(batch):
    assert decode_body(encode_request(batch), "application/x-protobuf") == [from_sdk(s) for s in batch]


# -- the common case in C (fabric/_span_wire.c) -----------------------------------

needs_native = pytest.mark.skipif(
    not otlp_encoder.native_built() and os.environ.get("MESHFABRIC_REQUIRE_NATIVE") != "1",
    reason="the install did not build fabric._span_wire (no C compiler or Python headers)")
# Runs are read from a LeanSpan's C fields, which MESHFABRIC_SPAN_CORE=python leaves out on purpose
needs_c_fields = pytest.mark.skipif(span_path_from_env() == "python",
                                    reason="MESHFABRIC_SPAN_CORE=python: a LeanSpan's fields are Python attributes")


def test_the_c_part_is_built_where_it_must_be():
    """CI builds it (``MESHFABRIC_REQUIRE_NATIVE=1``): spans must not fall back to Python unnoticed."""
    if os.environ.get("MESHFABRIC_REQUIRE_NATIVE") != "1":
        pytest.skip("MESHFABRIC_REQUIRE_NATIVE is not set")
    assert otlp_encoder.native_built(), "fabric._span_wire was not built: install gcc and Python's headers, reinstall"


@pytest.fixture
def both_encoders() -> Callable[[list[ReadableSpan]], tuple[bytes, bytes]]:
    """``encode(batch)``: the batch's bytes with the C part, then without it (and the C part
    in use again after)."""
    def encode(batch: list[ReadableSpan]) -> tuple[bytes, bytes]:
        try:
            assert otlp_encoder.use_native(True)
            with_c = encode_request(batch)
            assert not otlp_encoder.use_native(False)
            return with_c, encode_request(batch)
        finally:
            otlp_encoder.use_native(True)

    return encode


@pytest.fixture(scope="module")
def lean_tracer() -> Iterator[Any]:
    t = Telemetry(LABELS, recent_capacity=1)
    yield t.tracer
    t.shutdown()


@pytest.fixture(scope="module")
def other_tracer() -> Iterator[Any]:
    """Another node's tracer: its spans have a resource of their own."""
    t = Telemetry(NodeLabels("mesh2.broker.cdcdcd", "mesh2", "broker", "cd" * 32),
                  recent_capacity=1)
    yield t.tracer
    t.shutdown()


lean_scalars = st.one_of(texts, not_utf8, st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                         st.binary(max_size=4), st.tuples(st.integers(), st.integers()))
lean_keys = st.sampled_from(["", "a", "mesh.id", "ü", "\ud800"]) | texts
local_or_remote = st.builds(lambda ctx, remote: SpanContext(ctx.trace_id, ctx.span_id, remote, ctx.trace_flags),
                            span_contexts(), st.booleans())


@st.composite
def lean_spans(draw: st.DrawFn, tracer: Any) -> LeanSpan:
    """A lean span as a node's tracer makes it, with any name, ids, parent, kind, times and
    attributes, and now and then what only the Python encoder writes (a trace state, an event,
    a link, a status)."""
    context = draw(span_contexts() if draw(st.integers(0, 9)) == 0 else
                   st.builds(lambda c: SpanContext(c.trace_id, c.span_id, False, c.trace_flags), span_contexts()))
    span = LeanSpan(tracer, draw(texts), context, draw(st.none() | local_or_remote), draw(st.sampled_from(SpanKind)),
                    draw(st.dictionaries(lean_keys, lean_scalars, max_size=6)), draw(st.integers(0, 2**64 - 1)),
                    True, True)
    extra = draw(st.sampled_from(["none"] * 6 + ["event", "link", "status"]))
    if extra == "event":
        span.add_event("e", {"n": 1})
    elif extra == "link":
        span.add_link(SpanContext(3, 4, True))
    elif extra == "status":
        span.set_status(Status(StatusCode.ERROR, "broke"))
    span._end_time = draw(st.none() | st.integers(0, 2**64 - 1))
    return span


@needs_native
@given(data=st.data())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_the_c_part_writes_the_bytes_python_does(both_encoders, lean_tracer, data):
    batch = data.draw(st.lists(lean_spans(lean_tracer), max_size=5))
    with_c, without = both_encoders(batch)
    assert with_c == without
    if not any(type(v) is float and math.isnan(v) for s in batch for v in s._attributes.values()):  # NaN != NaN
        assert_same_as_the_sdk(batch)


@needs_native
def test_spans_the_c_part_leaves_to_python_are_encoded_and_logged_as_before(both_encoders, lean_tracer, caplog):
    root = SpanContext(1, 2, False)
    cases = {"too.big": 2**64, "a.tuple": (1, 2), "bytes": b"\x00", "not.utf8": "\udfff", "\ud800": "key"}
    batch = [LeanSpan(lean_tracer, "s", root, None, SpanKind.INTERNAL, {"kept": 1, key: value}, 5, True, True)
             for key, value in cases.items()]
    with caplog.at_level(logging.ERROR, logger="fabric.otlp_exporters"):
        with_c, without = both_encoders(batch)
    assert with_c == without
    assert caplog.text.count("Failed to encode key") == 2 * 3  # too.big, not.utf8, the key: twice each
    assert_same_as_the_sdk(batch)


@needs_native
def test_a_name_that_is_not_utf8_fails_the_batch_in_c_too(lean_tracer):
    span = LeanSpan(lean_tracer, "\ud800", SpanContext(1, 2, False), None, SpanKind.INTERNAL, {}, 5, True, True)
    assert otlp_encoder.use_native(True)
    with pytest.raises(UnicodeEncodeError):
        encode_request([span])


@needs_native
def test_a_nodes_spans_are_written_in_c(monkeypatch, node_spans):
    t, snapshot = node_spans
    with (t.tracer.start_as_current_span("produce", attributes={"meshfabric.offset": 7}),
          t.tracer.start_as_current_span("send t", kind=SpanKind.PRODUCER)):
        pass
    written_in_c = []
    real_field, real_run = otlp_encoder._native_span_field, otlp_encoder._native_lean_fields
    monkeypatch.setattr(otlp_encoder, "_native_span_field", lambda *args: written_in_c.append(1) or real_field(*args))

    def run(*args: Any) -> tuple[bytes, int]:
        fields, taken = real_run(*args)
        written_in_c.extend([1] * taken)
        return fields, taken

    if real_run is not None:
        monkeypatch.setattr(otlp_encoder, "_native_lean_fields", run)
    assert_same_as_the_sdk(snapshot())
    assert len(written_in_c) == 2  # neither fell back to Python


@needs_native
@needs_c_fields
def test_a_run_of_a_nodes_spans_is_read_from_their_c_fields():
    assert otlp_encoder._native_lean_fields is not None, "LeanSpan's fields are in C here: runs are written in C"


@needs_native
@given(data=st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_runs_written_from_c_fields_are_the_bytes_span_by_span(monkeypatch, lean_tracer, other_tracer, data):
    """Spans of two nodes and the SDK's, in any order: the runs ``lean_fields`` writes, and where
    it stops (another resource, an event, a link, a status, a trace state, an SDK span), give
    the bytes written span by span (C) and all in Python."""
    batch = data.draw(st.lists(lean_spans(lean_tracer) | lean_spans(other_tracer) | encodable_spans, max_size=8))
    assert otlp_encoder.use_native(True)
    in_runs = encode_request(batch)
    with monkeypatch.context() as patched:
        patched.setattr(otlp_encoder, "_native_lean_fields", None)
        span_by_span = encode_request(batch)
    try:
        otlp_encoder.use_native(False)
        in_python = encode_request(batch)
    finally:
        otlp_encoder.use_native(True)
    assert in_runs == span_by_span == in_python




anything = st.one_of(st.none(), st.booleans(), st.integers(-(2**130), 2**130), st.floats(), texts, not_utf8,
                     st.binary(max_size=4), st.tuples(), st.tuples(st.integers(), st.integers()),
                     st.tuples(st.integers(), st.integers(), st.booleans()), st.builds(dict), st.just(object()))


@needs_native
@given(st.tuples(anything | span_contexts(), anything | span_contexts(), anything, anything, anything, anything,
                 anything | st.dictionaries(lean_keys, anything, max_size=3)))
@settings(max_examples=500)
def test_the_c_part_takes_any_arguments_without_crashing(args):
    """Called only with a lean span's fields, but C must not crash on anything else: it answers
    bytes, None (left to Python) or a Python exception."""
    try:
        field = otlp_encoder._built_span_field(*args)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
        return
    assert field is None or type(field) is bytes


@needs_native
@needs_c_fields
@given(st.lists(anything, max_size=3), anything, anything, anything)
@settings(max_examples=300)
def test_lean_fields_takes_any_arguments_without_crashing(spans_, start, resource, scope):
    try:
        fields, taken = otlp_encoder._span_wire.lean_fields(spans_, start, resource, scope)
    except (TypeError, OverflowError):
        return
    assert (fields, taken) == (b"", 0)  # no LeanSpan among them


@needs_native
def test_lean_fields_reads_only_a_span_core_struct():
    kinds, state = tuple(SpanKind), DEFAULT_TRACE_STATE
    for span_type, core in ((LeanSpan, object), (ReadableSpan, FIELDS_IN_C), (LeanSpan, LeanSpan)):
        with pytest.raises(TypeError, match="configure_lean"):
            otlp_encoder._span_wire.configure_lean(span_type, core, UNSET_STATUS, state, kinds)
