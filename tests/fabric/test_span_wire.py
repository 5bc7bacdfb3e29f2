"""The encoder's C part (``fabric/_span_wire.c``): the bytes the Python encoder writes, for
any lean span and any run of them, and no crash on any argument."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    SpanContext,
    SpanKind,
)
from opentelemetry.trace.status import Status, StatusCode

from fabric import otlp_encoder
from fabric.lean_span import FIELDS_IN_C, UNSET_STATUS, LeanSpan
from fabric.otlp_encoder import encode_request
from fabric.span_path import span_path_from_env
from fabric.telemetry import NodeLabels, Telemetry
from tests.fabric.otlp_spans import (
    LABELS,
    assert_same_as_the_sdk,
    encodable_spans,
    not_utf8,
    span_contexts,
    texts,
)

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
