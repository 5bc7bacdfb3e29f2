"""Trace context on the wire: W3C headers out and back, bad headers, and the short paths
agreeing with the OpenTelemetry propagators on any header and any span context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from fabric import propagation, spans
from fabric.identity import Identity, node_name
from fabric.telemetry import NodeLabels, Telemetry

from .span_paths import python_start_path

NODE_ID = Identity.generate().node_id
LABELS = NodeLabels(name=node_name("mesh1", "broker", NODE_ID), mesh="mesh1", type="broker", node_id=NODE_ID)


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    """A node's tracer (spans kept in its ring only), shut down at teardown."""
    made = Telemetry(LABELS, exporter=None)
    yield made.tracer
    made.shutdown()


def test_inject_then_extract_keeps_the_trace(tracer):
    with tracer.start_as_current_span("caller") as caller:
        headers = propagation.inject()
    assert "traceparent" in headers
    ctx = propagation.extract(headers)
    with tracer.start_as_current_span("callee", context=ctx) as callee:
        pass
    caller_ctx, callee_span = caller.get_span_context(), callee
    assert callee_span.get_span_context().trace_id == caller_ctx.trace_id
    assert callee_span.parent is not None
    assert callee_span.parent.span_id == caller_ctx.span_id
    assert callee_span.parent.is_remote


def test_inject_fills_a_given_carrier(tracer):
    carrier = {"other": "x"}
    with tracer.start_as_current_span("caller"):
        out = propagation.inject(carrier)
    assert out["other"] == "x" and "traceparent" in out and "traceparent" in carrier


def test_inject_outside_a_span_is_empty():
    assert "traceparent" not in propagation.inject()
    with trace.use_span(trace.INVALID_SPAN):  # what a no-op tracer makes current with no trace upstream
        assert propagation.inject() == {} and propagation.inject({"kept": "1"}) == {"kept": "1"}


def test_extract_survives_a_msgpack_round_trip(tracer):
    import msgpack

    with tracer.start_as_current_span("caller") as caller:
        wire = msgpack.packb({"trace": propagation.inject()})
    ctx = propagation.extract(msgpack.unpackb(wire)["trace"])
    assert trace.get_current_span(ctx).get_span_context().trace_id == caller.get_span_context().trace_id


GARBAGE = [
    None,
    "traceparent",
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    42,
    ["traceparent"],
    {},
    {"traceparent": 5},
    {"traceparent": None},
    {"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {1: "x", b"traceparent": "y", ("t",): "z"},
    {"traceparent": "garbage"},
    {"traceparent": "00-xyz-abc-01"},
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},  # zero trace id
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},  # zero span id
    {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},  # forbidden version
    {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},  # upper case
    {"traceparent": "", "tracestate": "=,=,=="},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" * 100},
]


@pytest.mark.parametrize("carrier", GARBAGE, ids=range(len(GARBAGE)))
def test_extract_of_garbage_gives_a_new_root(tracer, carrier):
    ctx = propagation.extract(carrier)  # must not raise
    assert not trace.get_current_span(ctx).get_span_context().is_valid
    with tracer.start_as_current_span("handler", context=ctx) as span:
        pass
    assert span.parent is None
    assert span.get_span_context().trace_id != 0x0AF7651916CD43DD8448EB211C80319C


@pytest.mark.parametrize("carrier", [None, {}, [], "", 0, ()])
def test_extract_of_no_headers_is_what_the_propagators_give(tracer, carrier):
    with tracer.start_as_current_span("outer"):  # what is current must not leak into it
        ours = propagation.extract(carrier)
    assert ours == propagate.extract({}) == Context() and type(ours) is Context


@pytest.mark.parametrize("carrier", [c for c in GARBAGE if isinstance(c, dict)])
def test_extract_of_bad_headers_inside_a_span_does_not_inherit_it(tracer, carrier):
    with tracer.start_as_current_span("outer"):
        ctx = propagation.extract(carrier)
        with tracer.start_as_current_span("handler", context=ctx) as span:
            pass
    assert span.parent is None


TRACEPARENTS = [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
    "garbage", "", "00-" + "a" * 600,
]


@pytest.mark.parametrize("header", TRACEPARENTS)
def test_extract_fast_path_agrees_with_the_propagators(header):
    from opentelemetry import propagate

    theirs = trace.get_current_span(propagate.extract({"traceparent": header})).get_span_context()
    for _ in span_paths():
        ours = trace.get_current_span(propagation.extract({"traceparent": header})).get_span_context()
        assert (ours, ours.is_remote, ours.trace_flags, ours.is_valid) == (
            theirs, theirs.is_remote, theirs.trace_flags, theirs.is_valid)


def test_inject_fast_path_agrees_with_the_propagators(tracer):
    from opentelemetry import baggage, propagate
    from opentelemetry import context as context_api

    with tracer.start_as_current_span("parent"):
        theirs: dict[str, str] = {}
        propagate.inject(theirs)
        assert propagation.inject() == theirs and "traceparent" in theirs
        token = context_api.attach(baggage.set_baggage("k", "v"))  # baggage: the propagators' path
        try:
            theirs = {}
            propagate.inject(theirs)
            assert propagation.inject() == theirs and "baggage" in theirs
        finally:
            context_api.detach(token)


HEX = "0123456789abcdef"


def span_paths() -> Iterator[str]:
    """Run the loop's body with the spans' C part (where built), then without it."""
    if spans._span_core is not None:
        yield "C"
    with pytest.MonkeyPatch.context() as patch:
        python_start_path(patch)
        yield "Python"


def _hex(digits: int) -> st.SearchStrategy[str]:
    """Hex digits, often all zeros (an invalid id) or in upper case (not W3C's)."""
    return st.one_of(st.text(HEX, min_size=digits, max_size=digits), st.just("0" * digits),
                     st.text(HEX.upper(), min_size=digits, max_size=digits))


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from(["00", "01", "ff", "0g"]), trace_id=_hex(32), span_id=_hex(16),
       flags=st.one_of(st.text(HEX, min_size=2, max_size=2), st.just("zz")),
       rest=st.sampled_from(["", "-extra", " ", "-"]))
def test_extract_fast_path_agrees_with_the_propagators_on_any_header(version, trace_id, span_id, flags, rest):
    from opentelemetry import propagate

    header = f"{version}-{trace_id}-{span_id}-{flags}{rest}"
    theirs = trace.get_current_span(propagate.extract({"traceparent": header})).get_span_context()
    for _ in span_paths():
        ours = trace.get_current_span(propagation.extract({"traceparent": header})).get_span_context()
        assert (ours, ours.is_remote, ours.trace_flags, ours.is_valid, ours.trace_state) == (
            theirs, theirs.is_remote, theirs.trace_flags, theirs.is_valid, theirs.trace_state)


@settings(max_examples=300, deadline=None)
@given(trace_id=st.integers(0, 2**128 - 1), span_id=st.integers(0, 2**64 - 1), flags=st.integers(0, 255),
       remote=st.booleans(), state=st.sampled_from([None, [("vendor", "value")], [("a", "1"), ("b", "2")]]))
def test_inject_fast_path_agrees_with_the_propagators_on_any_span_context(trace_id, span_id, flags, remote, state):
    from opentelemetry import context as context_api
    from opentelemetry import propagate

    trace_state = trace.TraceState(state) if state is not None else None
    span = trace.NonRecordingSpan(trace.SpanContext(trace_id, span_id, remote, trace.TraceFlags(flags), trace_state))
    token = context_api.attach(trace.set_span_in_context(span))
    try:
        theirs: dict[str, str] = {}
        propagate.inject(theirs)
        for _ in span_paths():
            assert propagation.inject() == theirs
    finally:
        context_api.detach(token)


def test_inject_of_a_sampled_out_span_agrees_with_the_propagators(monkeypatch):
    from opentelemetry import propagate

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    made = Telemetry(LABELS, exporter=None)  # its sampler from the environment above
    try:
        with made.tracer.start_as_current_span("not recorded") as span:
            assert not span.is_recording() and span.get_span_context().is_valid
            theirs: dict[str, str] = {}
            propagate.inject(theirs)
            assert propagation.inject() == theirs and theirs["traceparent"].endswith("-00")
        assert propagation.inject() == {}  # outside any span: nothing to send
    finally:
        made.shutdown()
