"""The spans' hot path in C (``fabric/_span_core.c``) makes the spans the Python path makes.

Compared three ways: in this process, the C start path against ``LeanTracer``'s Python one
(hypothesis draws the attributes); in a process with ``MESHFABRIC_SPAN_CORE=python`` (the
span's fields and ``end`` in Python too), a scenario's spans against this process's; and the
C parts alone: references kept, cycles collected, ``end``'s arguments, a processor's error.
"""

from __future__ import annotations

import contextvars
import gc
import json
import logging
import os
import subprocess
import sys
import tracemalloc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind

from fabric import propagation, spans
from fabric.errors import ConfigError
from fabric.identity import node_name
from fabric.lean_span import TRACE_FLAGS, UNSET_STATUS, LeanSpan
from fabric.spans import LeanTracer
from fabric.telemetry import NodeLabels, Telemetry

from .span_paths import python_start_path

core = pytest.importorskip("fabric._span_core", reason="the C part was not built (no compiler at install)")

NODE_ID = "0123ab" + "cd" * 29  # fixed: the subprocess's spans are compared with this one's
LABELS = NodeLabels(name=node_name("mesh1", "broker", NODE_ID), mesh="mesh1", type="broker", node_id=NODE_ID)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    telemetry_ = Telemetry(LABELS, exporter=None)
    yield telemetry_
    telemetry_.shutdown()


def scenario(tracer: trace.Tracer) -> None:
    """Every way a node's code starts and ends spans, the common cases and the fallbacks."""
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"a": 1, "b": "x"}) as root:
        root.set_attribute("later", 2.5)
        with tracer.start_as_current_span("child", attributes={"flag": True}, start_time=1_000) as child:
            child.add_event("happened", {"n": 3})
        with pytest.raises(KeyError), tracer.start_as_current_span("failing"):
            raise KeyError("boom")
        with tracer.start_as_current_span("quiet failure", record_exception=False,
                                          set_status_on_exception=False), pytest.raises(ValueError):
            raise ValueError("not recorded")
        kept = tracer.start_as_current_span("kept open", end_on_exit=False)
        with kept as open_span:
            pass
        open_span.end(end_time=5_000)
        tracer.start_span("odd attribute", attributes={"raw": b"bytes"}).end()  # the SDK's span
        tracer.start_span("linked", links=[trace.Link(root.get_span_context())]).end()  # the SDK's span
        tracer.start_span("plain").end(7_000)
    for sampled in ("01", "00"):
        remote = propagation.extract({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-{sampled}"})
        token = context_api.attach(remote)
        try:
            with tracer.start_as_current_span(f"under a remote parent {sampled}") as span:
                assert span.get_span_context().trace_flags.sampled == (sampled == "01")
                with tracer.start_as_current_span("its child"):
                    pass
        finally:
            context_api.detach(token)


def canonical(finished: list[Any]) -> list[dict[str, Any]]:
    """The spans with their ids replaced by their order of appearance (ids are random), and
    the times they did not choose and the provider's instance id left out."""
    names: dict[int, int] = {}

    def ref(value: int | None) -> int | None:
        return None if value is None else names.setdefault(value, len(names))

    out = []
    for span in finished:
        ctx, parent = span.get_span_context(), span.parent
        given = {1_000, 5_000, 7_000}
        out.append({
            "type": "lean" if type(span) is LeanSpan else type(span).__name__,
            "name": span.name, "kind": span.kind.name, "trace": ref(ctx.trace_id), "span": ref(ctx.span_id),
            "parent": ref(parent.span_id) if parent else None, "parent_remote": parent.is_remote if parent else None,
            "flags": int(ctx.trace_flags), "state": ctx.trace_state.to_header(),
            "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()},
            "events": [[e.name, dict(e.attributes or {})] for e in span.events if e.name != "exception"],
            "exception": [dict(e.attributes or {})["exception.type"] for e in span.events if e.name == "exception"],
            "links": len(span.links), "status": [span.status.status_code.name, span.status.description],
            "start": span.start_time if span.start_time in given else "now",
            "end": span.end_time if span.end_time in given else "now",
            "resource": {k: v for k, v in span.resource.attributes.items() if k != "service.instance.id"},
            "scope": span.instrumentation_scope.name,
        })
    return out


def finished_spans(made: Telemetry) -> list[dict[str, Any]]:
    return canonical(made.recent.snapshot())


def test_the_c_path_is_the_one_in_use_here():
    assert spans._span_core is core and spans.Current is core.Current
    assert issubclass(LeanSpan, core.SpanCore)


def test_c_and_python_start_paths_make_the_same_spans(made, monkeypatch):
    scenario(made.tracer)
    by_c = finished_spans(made)
    python_start_path(monkeypatch)
    other = Telemetry(LABELS, exporter=None)
    try:
        scenario(other.tracer)
        by_python = finished_spans(other)
    finally:
        other.shutdown()
    assert by_c == by_python
    assert [s["type"] for s in by_c].count("lean") == 8  # and the fallbacks, the SDK's spans:
    assert {s["name"] for s in by_c if s["type"] != "lean"} == {"odd attribute", "linked"}


SCENARIO_RUN = """
import json, sys
sys.path[:0] = {path!r}
from tests.fabric.test_span_core import LABELS, canonical, scenario
from fabric import spans
from fabric.telemetry import Telemetry
made = Telemetry(LABELS, exporter=None)
scenario(made.tracer)
print(json.dumps({{"core": spans._span_core is not None, "spans": canonical(made.recent.snapshot())}}, default=repr))
"""


def test_spans_made_all_in_python_are_the_same(made):
    """With ``MESHFABRIC_SPAN_CORE=python`` (a span's fields and ``end`` in Python too)."""
    scenario(made.tracer)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {spans.SPAN_CORE_ENV: "python"}
    run = subprocess.run([sys.executable, "-c", SCENARIO_RUN.format(path=[root])], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["core"] is False
    assert got["spans"] == json.loads(json.dumps(finished_spans(made), default=repr))


_scalars = st.one_of(st.text(max_size=5), st.booleans(), st.integers(), st.floats(allow_nan=False))
_attribute_values = st.one_of(_scalars, st.lists(st.integers(), max_size=3), st.binary(max_size=3), st.none(),
                              st.tuples(st.integers(), st.text(max_size=2)))
_attribute_maps = st.none() | st.dictionaries(st.text(max_size=4) | st.integers(), _attribute_values, max_size=4)


@settings(max_examples=150, deadline=None)
@given(attributes=_attribute_maps, parent_sampled=st.sampled_from([None, True, False]))
def test_attributes_are_kept_or_left_to_the_sdk_alike(attributes, parent_sampled):
    """Whatever attributes a caller passes, both start paths keep the same ones, or both hand
    the span to the SDK's tracer."""
    results = []
    for python in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            if python:
                python_start_path(patch)
            made = Telemetry(LABELS, exporter=None)
            try:
                token = None
                if parent_sampled is not None:
                    remote = propagation.extract({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-{'01' if parent_sampled else '00'}"})
                    token = context_api.attach(remote)
                try:
                    span = made.tracer.start_span("s", attributes=attributes)
                finally:
                    if token is not None:
                        context_api.detach(token)
                span.end()
                results.append((type(span).__name__, span.is_recording(), dict(getattr(span, "attributes", None) or {})))
            finally:
                made.shutdown()
    assert results[0] == results[1]


def test_a_span_holds_no_reference_it_does_not_give_back(made):
    tracer = made.tracer
    watched = [tracer, tracer.labels, made.provider.resource, tracer.scope, UNSET_STATUS,
               trace.DEFAULT_TRACE_STATE, "kept name", *TRACE_FLAGS.values(), LABELS.node_id]
    gc.collect()  # what earlier tests left in cycles
    before = [sys.getrefcount(x) for x in watched]
    for _ in range(2_000):
        with tracer.start_as_current_span("kept name", attributes={"k": 1}), tracer.start_as_current_span("kept name"):
            pass
        tracer.start_span("kept name").end()
    made.recent._spans.clear()
    gc.collect()
    assert [sys.getrefcount(x) for x in watched] == before


def test_starting_ending_and_propagating_spans_keeps_no_memory(made):
    """What a request's tracing allocates in C (spans, contexts, span contexts, headers) is all
    given back: traced memory after 20,000 more spans is what it was after the first 2,000."""
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def requests(count: int) -> None:
        for _ in range(count):
            token = context_api.attach(propagation.extract({"traceparent": header}))
            try:
                with (made.tracer.start_as_current_span("receive", attributes={"k": 1}),
                      made.tracer.start_as_current_span("append")):
                    propagation.inject()
            finally:
                context_api.detach(token)

    tracemalloc.start()
    try:
        requests(2_000)  # the ring full, every cache warm
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        requests(20_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept by 20,000 traced requests"


def test_a_cycle_through_a_span_is_collected(made):
    span = made.tracer.start_span("cyclic")
    span._attributes["self"] = None  # a dict the span owns ...
    span.__dict__["me"] = span  # ... and a cycle through its instance dict
    span._events = [span]  # and through one of its C fields
    gone = weakref.ref(span)
    del span
    gc.collect()
    assert gone() is None


def test_end_takes_its_time_once_positionally_or_by_name(made):
    first, second = made.tracer.start_span("a"), made.tracer.start_span("b")
    first.end(11)
    second.end(end_time=12)
    first.end(99)
    assert (first.end_time, second.end_time) == (11, 12) and not first.is_recording()
    with pytest.raises(TypeError):
        made.tracer.start_span("c").end(when=1)
    assert made.recent.snapshot()[-2:] == [first, second]


def test_a_processors_error_reaches_whoever_ended_the_span(made):
    class Failing(SpanProcessor):
        def on_end(self, span: Any) -> None:
            raise RuntimeError("processor broke")

    made.provider._active_span_processor._span_processors += (Failing(),)
    with pytest.raises(RuntimeError, match="processor broke"):
        made.tracer.start_span("ends").end()
    with pytest.raises(RuntimeError, match="processor broke"), made.tracer.start_as_current_span("ends too"):
        pass
    assert trace.get_current_span() is trace.INVALID_SPAN  # the context was restored first


def test_a_current_span_left_in_another_context_logs_and_still_ends(made, caplog):
    current = made.tracer.start_as_current_span("moved")
    contextvars.copy_context().run(current.__enter__)
    with caplog.at_level(logging.ERROR):
        assert current.__exit__(None, None, None) is False
    assert "Failed to detach context" in caplog.text
    assert not current._span.is_recording()


def test_current_can_be_made_for_any_span():
    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    with core.Current(span, True, True, True) as entered:
        assert entered is span and trace.get_current_span() is span
    assert trace.get_current_span() is trace.INVALID_SPAN
    with pytest.raises(TypeError):
        core.Current(span)


def test_the_canonical_traceparent_is_read_and_written_in_c(made):
    """The propagation the tests in test_propagation.py compare with the propagators, on both
    paths, is C's for the header every request carries; anything else is Python's."""
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = core.remote_context(header)
    assert type(context) is spans.Context
    span = trace.get_current_span(context)
    assert type(span) is trace.NonRecordingSpan and span.get_span_context().is_remote
    for other in (header + "\n", header.upper(), header + "-x", " " + header[1:], None, 5):
        assert core.remote_context(other) is NotImplemented
    token = context_api.attach(context)
    try:
        with made.tracer.start_as_current_span("child") as child:
            written = core.current_traceparent()
        assert written == f"00-0af7651916cd43dd8448eb211c80319c-{child.get_span_context().span_id:016x}-01"
        assert core.current_traceparent() == header  # the remote parent's own
    finally:
        context_api.detach(token)
    assert core.current_traceparent() is None  # no span: nothing to send


@pytest.mark.parametrize("rate", ["0", "0.01", "0.5", "1"])
def test_a_ratio_samplers_roots_are_decided_as_it_decides(monkeypatch, rate):
    """Under ``parentbased_traceidratio`` the C path decides a root itself: as the sampler
    would for the trace id it drew, and a sampled root records, an unsampled one does not."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", rate)
    made = Telemetry(LABELS, exporter=None)
    try:
        tracer = made.tracer
        state = tracer._core_state
        assert core.start(state, tracer, "direct", SpanKind.INTERNAL, None, None, True, True) is not NotImplemented
        decisions = set()
        for _ in range(400):
            span = tracer.start_span("root", attributes={"a": 1})
            ctx = span.get_span_context()
            expected = tracer.sampler.should_sample(None, ctx.trace_id, "root").decision.is_sampled()
            assert ctx.trace_flags.sampled == expected == span.is_recording()
            assert (type(span) is LeanSpan) == expected
            decisions.add(expected)
            span.end()
        assert decisions == {"0": {False}, "1": {True}, "0.5": {False, True}}.get(rate, decisions)
    finally:
        made.shutdown()


class ScriptedBits(IdGenerator):
    """An id generator whose random bits come from ``draws`` (then 7s): ``random_bits`` as
    ``telemetry.PrivateRandomIdGenerator`` offers it to the C path."""

    def __init__(self, draws: list[int]) -> None:
        self.draws = iter(draws)

    def random_bits(self, k: int) -> int:
        return next(self.draws, 7)

    def generate_span_id(self) -> int:
        raise AssertionError("the C path draws from random_bits")

    generate_trace_id = generate_span_id


def test_ids_drawn_from_random_bits_are_drawn_again_on_zero():
    tracer = LeanTracer(TracerProvider(id_generator=ScriptedBits([0, 0, 5, 0, 9])), "test", {})
    with tracer.start_as_current_span("root") as span:  # a trace id (0, 0, 5), then a span id (0, 9)
        assert (span.get_span_context().trace_id, span.get_span_context().span_id) == (5, 9)


def test_random_bits_that_are_always_zero_fail_the_start_cleanly():
    tracer = LeanTracer(TracerProvider(id_generator=ScriptedBits([0] * 100)), "test", {})
    with pytest.raises(RuntimeError, match="gave 0"):
        tracer.start_span("root")
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing made current, nothing left behind


def test_a_nodes_id_generator_offers_its_random_bits(made):
    assert made.tracer._core_state[1].func == made.provider.id_generator.random_bits
    ids = {made.tracer.start_span("s").get_span_context().span_id for _ in range(1000)}
    assert len(ids) == 1000 and all(0 < i < 2 ** 64 for i in ids)


def test_the_span_path_variable_is_checked(monkeypatch):
    assert spans.span_path_from_env({}) == "auto"
    assert spans.span_path_from_env({spans.SPAN_CORE_ENV: " Python "}) == "python"
    with pytest.raises(ConfigError, match="MESHFABRIC_SPAN_CORE='fastest': expected one of auto, c, python"):
        spans.check_span_path({spans.SPAN_CORE_ENV: "fastest"})
    assert spans.check_span_path({spans.SPAN_CORE_ENV: "c"}) == "C"  # built here, and in use
    monkeypatch.setattr(spans, "_span_core", None)
    with pytest.raises(ConfigError, match="MESHFABRIC_SPAN_CORE=c but fabric._span_core is not in use"):
        spans.check_span_path({spans.SPAN_CORE_ENV: "c"})
    assert spans.check_span_path({}) == spans.path_in_use() == "Python"
