"""The lean tracer's shortcuts give what the OTel SDK would: sampling, span contexts, the
current context restored on exit (also when a span ends in another task)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.trace import SpanContext, TraceFlags

from fabric import spans
from fabric.identity import Identity, node_name
from fabric.lean_span import LeanSpan, valid_span_context
from fabric.telemetry import NodeLabels, Telemetry

from .span_paths import python_start_path

NODE_ID = Identity.generate().node_id
LABELS = NodeLabels(name=node_name("mesh1", "gateway", NODE_ID), mesh="mesh1", type="gateway", node_id=NODE_ID)


@pytest.fixture(params=["C start path", "Python start path"])
def tracer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[spans.LeanTracer]:
    """A node's tracer; spans started by ``fabric/_span_core.c`` (where built) or in Python."""
    if request.param == "Python start path":
        python_start_path(monkeypatch)
    elif spans._span_core is None:
        pytest.skip("the C part was not built")
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    made = Telemetry(LABELS, exporter=None)
    yield made.tracer
    made.shutdown()


def test_the_shortcut_span_context_is_the_constructors():
    flags = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
    fast = valid_span_context(0xABC, 0xDEF, flags, trace.DEFAULT_TRACE_STATE)
    slow = SpanContext(0xABC, 0xDEF, False, flags, trace.DEFAULT_TRACE_STATE)
    assert fast == slow and type(fast) is SpanContext
    assert (fast.trace_id, fast.span_id, fast.is_remote, fast.trace_flags, fast.is_valid) == (
        0xABC, 0xDEF, False, flags, True)


def test_default_sampler_records_roots_without_asking(tracer, monkeypatch):
    assert tracer._sample_roots
    monkeypatch.setattr(tracer.sampler, "should_sample", lambda *a, **k: pytest.fail("sampler asked"))
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("child") as child:
            pass
    assert isinstance(root, LeanSpan) and root.parent is None and root.get_span_context().trace_flags.sampled
    assert child.parent == root.get_span_context()
    assert child.get_span_context().trace_id == root.get_span_context().trace_id


def test_a_ratio_sampler_still_decides_roots(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    made = Telemetry(LABELS, exporter=None)
    try:
        tracer = made.tracer
        assert not tracer._sample_roots
        with tracer.start_as_current_span("root") as root:
            with tracer.start_as_current_span("child") as child:
                pass
        assert not root.is_recording() and not child.is_recording()
        assert child.get_span_context().trace_id == root.get_span_context().trace_id  # context still propagates
        assert made.recent.snapshot() == []
    finally:
        made.shutdown()


def test_the_current_context_is_restored_after_each_span(tracer):
    before = context_api.get_current()
    with tracer.start_as_current_span("outer") as outer:
        assert trace.get_current_span() is outer
        with tracer.start_as_current_span("inner") as inner:
            assert trace.get_current_span() is inner
        assert trace.get_current_span() is outer
    assert context_api.get_current() == before
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_an_exception_ends_the_span_in_error_and_restores_the_context(tracer):
    with pytest.raises(KeyError):
        with tracer.start_as_current_span("failing") as span:
            raise KeyError("boom")
    assert span.status.status_code is trace.StatusCode.ERROR and span.end_time is not None
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_span_exited_in_another_task_logs_instead_of_raising(tracer, caplog):
    async def main() -> None:
        current = tracer.start_as_current_span("moved")
        await asyncio.get_running_loop().create_task(_enter(current))
        current.__exit__(None, None, None)  # the token belongs to the other task's context

    async def _enter(current) -> None:  # type: ignore[no-untyped-def]
        current.__enter__()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "Failed to detach context" in caplog.text


class _RecordOnly(sampling.Sampler):
    """Records every span without sampling it (the decision the lean tracer leaves to the SDK)."""

    def should_sample(self, *args: object, **kwargs: object) -> sampling.SamplingResult:
        return sampling.SamplingResult(sampling.Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "RecordOnly"


@pytest.mark.parametrize("sampler", [sampling.ALWAYS_OFF, _RecordOnly(), sampling.ParentBased(_RecordOnly())])
def test_a_lean_span_is_always_a_sampled_one(sampler):
    """The OTLP export processor takes a ``LeanSpan`` as sampled without reading its flags:
    whatever is not sampled is a non-recording span or the SDK's own."""
    tracer = spans.LeanTracer(TracerProvider(sampler=sampler), "test", {})
    for span in (tracer.start_span("root"), tracer.start_span("child", trace.set_span_in_context(
            trace.NonRecordingSpan(SpanContext(1, 2, True, TraceFlags(0)))))):
        assert not span.get_span_context().trace_flags.sampled
        assert type(span) is not LeanSpan
        span.end()


def _seen_by(tracer: trace.Tracer) -> list[object]:
    """What code inside and after a span sees, under an upstream (remote) span made current."""
    from fabric.propagation import inject

    remote = trace.NonRecordingSpan(SpanContext(0xABC, 0xDEF, True, TraceFlags(TraceFlags.SAMPLED)))
    token = context_api.attach(trace.set_span_in_context(remote))
    try:
        seen: list[object] = []
        with tracer.start_as_current_span("outer", attributes={"a": 1}) as outer:
            with tracer.start_as_current_span("inner", kind=trace.SpanKind.CLIENT) as inner:
                seen += [outer, inner, trace.get_current_span(), inject(), outer.is_recording()]
            seen.append(trace.get_current_span())
        seen.append(trace.get_current_span())
        with pytest.raises(KeyError), tracer.start_as_current_span("failing"):
            raise KeyError("boom")
        seen += [trace.get_current_span(), tracer.start_span("plain")]
        other = trace.NonRecordingSpan(SpanContext(0x123, 0x456, True, TraceFlags(0)))
        with tracer.start_as_current_span("given a context", trace.set_span_in_context(other)) as given:
            seen += [given, trace.get_current_span()]
        return [(type(s), s.get_span_context()) if isinstance(s, trace.Span) else s for s in seen]
    finally:
        context_api.detach(token)


def test_the_off_tracer_is_the_apis_no_op_tracer_as_code_sees_it():
    """The same spans, current spans and headers as ``NoOpTracer`` (non-recording spans with
    the upstream context, which passes through), exceptions not swallowed."""
    seen = _seen_by(spans.OffTracer())
    assert seen == _seen_by(trace.NoOpTracer())
    assert seen[0][1].span_id == 0xDEF and seen[3]["traceparent"].endswith("-0000000000000def-01")


def test_with_the_sdk_disabled_a_node_records_nothing(monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    made = Telemetry(LABELS, exporter=None)
    try:
        assert isinstance(made.tracer, spans.OffTracer) and not made.enabled
        with made.tracer.start_as_current_span("not recorded") as span:
            assert not span.is_recording()
        assert made.recent.snapshot() == []
    finally:
        made.shutdown()


def test_set_attribute_keeps_scalars_and_their_sequences_and_logs_what_it_drops(tracer, caplog):
    span = tracer.start_span("attributes")
    with caplog.at_level(logging.WARNING, logger="fabric.spans"):
        for key, value in [("s", "v"), ("i", 7), ("f", 1.5), ("b", True), ("list", [1, 2]), ("tuple", ("a",)),
                           ("mixed", [1, "a"]), ("dict", {"a": 1}), ("none", None), ("", "empty key"), (3, "int key"),
                           ("bytes", b"x"), ("big", 2**70)]:
            span.set_attribute(key, value)  # type: ignore[arg-type]
    span.end()
    span.set_attribute("late", 1)  # ended: ignored
    kept = {k: v for k, v in span.attributes.items() if k not in LABELS.attributes()}
    assert kept == {"s": "v", "i": 7, "f": 1.5, "b": True, "list": (1, 2), "tuple": ("a",), "big": 2**70}
    # mixed, dict, None, empty key, int key, bytes (the SDK keeps bytes: a span given bytes at
    # its start goes to the SDK's tracer, one set later is dropped here)
    assert caplog.text.count("invalid span attribute") == 6


@pytest.mark.parametrize("parent_sampled", [True, False])
def test_attributes_the_lean_span_cannot_keep_go_to_the_sdk_only_for_a_span_that_records(tracer, parent_sampled):
    """Attributes are built only once a span is known to record (a child of an unsampled
    parent skips them); a value the lean span cannot keep (here bytes, which the SDK keeps)
    sends a recording span to the SDK's tracer, and the trace continues either way."""
    parent = trace.NonRecordingSpan(SpanContext(0xABC, 0xDEF, True, TraceFlags(int(parent_sampled))))
    span = tracer.start_span("child", trace.set_span_in_context(parent), attributes={"ok": 1, "raw": b"bytes"})
    assert span.get_span_context().trace_id == 0xABC
    assert span.is_recording() is parent_sampled
    if parent_sampled:
        assert type(span) is not LeanSpan and span.attributes["raw"] == b"bytes" and span.attributes["ok"] == 1
        assert span.parent.span_id == 0xDEF
    else:
        assert type(span) is trace.NonRecordingSpan and span.get_span_context().span_id not in (0, 0xDEF)
    span.end()


def test_a_ratio_sampler_is_asked_with_the_spans_attributes(monkeypatch):
    """A sampler that decides on attributes still gets them (built before it is asked)."""
    seen: list[dict] = []

    class ByAttribute(sampling.Sampler):
        def should_sample(self, context, trace_id, name, kind=None, attributes=None, links=None):  # type: ignore[no-untyped-def]
            seen.append(dict(attributes or {}))
            keep = (attributes or {}).get("keep") is True
            return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE if keep else sampling.Decision.DROP)

        def get_description(self) -> str:
            return "ByAttribute"

    tracer = spans.LeanTracer(TracerProvider(sampler=ByAttribute()), "test", {"node.type": "gateway"})
    kept, dropped = tracer.start_span("kept", attributes={"keep": True}), tracer.start_span("dropped")
    assert type(kept) is LeanSpan and kept.attributes["keep"] is True and not dropped.is_recording()
    assert seen == [{"node.type": "gateway", "keep": True}, {"node.type": "gateway"}]
