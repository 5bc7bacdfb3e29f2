"""What the OTLP encoder's tests share: spans of every shape (hypothesis strategies), a
node's labels, and the check against the SDK's own encoder."""

from __future__ import annotations

from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import Attributes

from fabric.otlp_encoder import encode_request
from fabric.telemetry import NodeLabels

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


encodable_scalars = st.one_of(texts, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                              st.binary(max_size=8), st.none())
encodable_values = st.one_of(encodable_scalars, st.lists(encodable_scalars, max_size=3),
                             st.dictionaries(texts, encodable_scalars, max_size=2))
encodable_attributes = st.dictionaries(texts, encodable_values, max_size=5)
# One resource and scope (so the request keeps the spans' order), every attribute encodable
# (so none is dropped).
encodable_spans = spans(encodable_attributes, RESOURCES[:1], SCOPES[1:2])
