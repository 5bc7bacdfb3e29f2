"""A lean tracer for the hot path: the SDK's sampler, ids, resource and processors, less work.

Profiling 20k spans showed the OTel SDK's ``start_as_current_span`` at ~20-25 µs a span: a
third validating attributes one by one (``BoundedAttributes``), the rest in generator-based
context managers, a lock per span, the tracer's self-metrics and ``on_start``/``_on_ending``
hooks nobody here uses. A produce records 5 spans, so tracing cost a third of throughput.

``LeanTracer`` makes the same spans for ~a third of that: it asks the provider's sampler (and
follows the parent's decision itself when that sampler is the standard parent-based one),
draws ids from the provider's generator and makes ``LeanSpan``s (``fabric/lean_span.py``:
attributes of the types OTel allows; anything else falls back to the SDK), which on ``end``
hand themselves, SDK ``ReadableSpan``s, to the provider's span processors: the ring of recent
spans and the OTLP export see what the SDK would give them.
Under the default sampler (``ParentBased(ALWAYS_ON)``) a root span is sampled without asking
it; the ``ContextVar`` behind OTel's default runtime context is read and set directly.
Spans with links go through the SDK tracer unchanged. Not done: span limits (a span here
carries a dozen attributes, the SDK's limit is 128) and ``on_start`` hooks (ours have none).

The common case, a span under the current one (or a root) with plain attributes under that
default sampler (or a parent-based ratio sampler, whose roots are decided as
``TraceIdRatioBased`` decides: by the trace id's low 64 bits), is started, made current and
ended in C where the install built ``fabric/_span_core.c`` (``_span_core``): the same spans
(``tests/fabric/test_span_core.py``), ~1.4 µs a child span warm instead of ~3.3; in a node
under load it cut what recording costs a produce by about two thirds (docs/performance-rounds.md,
fourteenth round). Anything else falls back to the Python path below, which is also all there
is without the C part (``fabric/span_path.py`` says when the C part is used).
``propagation.inject``/``extract`` use its ``traceparent`` functions.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Mapping

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation import _SPAN_KEY

from . import span_path
from .errors import ConfigError
from .lean_span import (
    INVALID,
    SCALAR_TYPES,
    SPAN_CORE,
    TRACE_FLAGS,
    UNSET_STATUS,
    LeanSpan,
    clean,
    valid_span_context,
)
from .span_path import CONTEXT_IS_TUPLE, SPAN_CORE_ENV, span_path_from_env

_STR = frozenset((str,))
_CONTEXT = span_path.CONTEXT_VAR
current_context = _CONTEXT.get if _CONTEXT is not None else context_api.get_current  # what get_current gives
_span_core = SPAN_CORE  # read by the tracer and propagation at each call: a test switches the C path off here


def path_in_use() -> str:
    """Where this process starts and ends its spans' common case: ``"C"`` or ``"Python"``."""
    return "C" if _span_core is not None else "Python"


def check_span_path(environ: Mapping[str, str] = os.environ) -> str:
    """For a node at start: the span path in use (``path_in_use``), or a ``ConfigError`` for a
    bad ``MESHFABRIC_SPAN_CORE``, or for ``c`` where the C part is not in use."""
    if span_path_from_env(environ) == "c" and _span_core is None:
        raise ConfigError(f"{SPAN_CORE_ENV}=c but fabric._span_core is not in use: the install could not build "
                          f"it (it needs a C compiler and Python's headers), or this OpenTelemetry's context or "
                          f"span context is not what it reads; set {SPAN_CORE_ENV}=auto or python")
    return path_in_use()


def _parent_based_default(sampler: sampling.Sampler) -> bool:
    """True for ``ParentBased`` with the standard delegates: a child follows its parent."""
    if not isinstance(sampler, sampling.ParentBased):
        return False
    delegates = [getattr(sampler, f"_{w}_parent_{s}", None) for w in ("remote", "local") for s in ("sampled", "not_sampled")]
    return delegates == [sampling.ALWAYS_ON, sampling.ALWAYS_OFF, sampling.ALWAYS_ON, sampling.ALWAYS_OFF]


def _ratio_bound(sampler: sampling.Sampler) -> int | None:
    """The bound of a parent-based sampler's root ``TraceIdRatioBased`` (roots whose trace id's
    low 64 bits are under it are sampled), for ``_span_core`` to decide as it would; else None."""
    root = getattr(sampler, "_root", None)
    return root.bound if type(root) is sampling.TraceIdRatioBased else None


def _exit_failed(span: trace.Span, exc: BaseException, record: bool, set_status: bool) -> None:
    """What leaving a span's ``with`` block by an exception does to the span, if it records."""
    if span.is_recording():
        if record:
            span.record_exception(exc)
        if set_status:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


class _PyCurrent:
    """``start_as_current_span``'s context manager, as ``trace.use_span`` does it, as a class
    (the SDK nests two generator-based context managers); ``Current`` is the same in C where
    ``fabric._span_core`` is used."""

    __slots__ = ("_span", "_token", "_end", "_record", "_set_status")

    def __init__(self, span: trace.Span, end_on_exit: bool, record_exception: bool, set_status: bool) -> None:
        self._span, self._end, self._record, self._set_status = span, end_on_exit, record_exception, set_status

    def __enter__(self) -> trace.Span:
        # ``trace.set_span_in_context`` and ``context.attach``, without their calls
        context = Context({**current_context(), _SPAN_KEY: self._span})
        self._token = _CONTEXT.set(context) if _CONTEXT is not None else context_api.attach(context)
        return self._span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        try:
            _CONTEXT.reset(self._token)  # type: ignore[union-attr]
        except (AttributeError, ValueError, RuntimeError):  # another runtime context, or another task's token
            context_api.detach(self._token)  # logs what it cannot undo, as the SDK does
        if isinstance(exc, Exception) and (self._record or self._set_status):
            _exit_failed(self._span, exc, self._record, self._set_status)
        if self._end:
            self._span.end()
        return False


Current: Any = _span_core.Current if _span_core is not None else _PyCurrent


class LeanTracer(trace.Tracer):
    """A tracer whose every span carries ``labels`` (a span alone says where it ran)."""

    def __init__(self, provider: TracerProvider, name: str, labels: Mapping[str, str]) -> None:
        self.provider, self.name = provider, name
        self.labels = dict(labels)
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.resource = provider.resource
        # The provider's processors; ``get_tracer`` would hand over the same object, but it
        # costs ~50-100 µs of a ~2.5 ms boot (it re-registers a warnings filter and trips a
        # deprecation warning every call), so the SDK tracer is made only when needed.
        self.processor = getattr(provider, "_active_span_processor", None) or self.sdk.span_processor
        self.scope = InstrumentationScope(name, "")
        self._sdk: trace.Tracer | None = None
        self._follow_parent = _parent_based_default(self.sampler)
        # The default sampler, ParentBased(ALWAYS_ON), samples every root span: no need to ask.
        self._sample_roots = self._follow_parent and getattr(self.sampler, "_root", None) is sampling.ALWAYS_ON
        self._random_ids = TraceFlags.RANDOM_TRACE_ID if self.ids.is_trace_id_random() else 0
        # what fabric._span_core's start reads (its S_* indices), built once; ids drawn straight
        # from the generator's random bits where it offers them (no Python call a span; start
        # draws again on a 0, as the generator's methods do)
        bits = getattr(self.ids, "random_bits", None)
        span_ids, trace_ids = ((functools.partial(bits, 64), functools.partial(bits, 128)) if callable(bits)
                               else (self.ids.generate_span_id, self.ids.generate_trace_id))
        self._core_state = (self.labels, span_ids, trace_ids,
                            self._follow_parent, self._sample_roots, int(self._random_ids), self.resource,
                            self.scope, LeanSpan, _ratio_bound(self.sampler) if self._follow_parent else None)

    @property
    def sdk(self) -> Any:
        """The SDK's own tracer: for spans with links, odd attributes, record-only sampling."""
        if self._sdk is None:
            self._sdk = self.provider.get_tracer(self.name)
        return self._sdk

    def _sdk_span(self, name: str, context: Any, kind: SpanKind, attributes: Any, links: Any,
                  start_time: int | None, record_exception: bool, set_status_on_exception: bool) -> trace.Span:
        return self.sdk.start_span(name, context, kind, {**self.labels, **(attributes or {})}, links, start_time,
                                   record_exception, set_status_on_exception)

    def _attributes(self, attributes: Any) -> dict[str, Any] | None:
        """The node's labels and ``attributes`` as a span keeps them; ``None`` if one of them
        needs the SDK's handling (a value of another type, a key that is not a string)."""
        if not attributes:
            return dict(self.labels)
        if _STR.issuperset(map(type, attributes)) and SCALAR_TYPES.issuperset(map(type, attributes.values())):
            return {**self.labels, **attributes}  # the common case, checked in C
        attrs = dict(self.labels)
        for key, value in attributes.items():
            value = clean(value)
            if value is INVALID or not isinstance(key, str):
                return None
            attrs[key] = value
        return attrs

    def start_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: Any = None, links: Any = None, start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True) -> trace.Span:
        if _span_core is not None and context is None and not links:  # the common case, in C
            span = _span_core.start(self._core_state, self, name, kind, attributes, start_time, record_exception,
                                    set_status_on_exception)
            if span is not NotImplemented:
                return span
        return self._start_in_python(name, context, kind, attributes, links, start_time, record_exception,
                                     set_status_on_exception)

    def _start_in_python(self, name: str, context: Any, kind: SpanKind, attributes: Any, links: Any,
                         start_time: int | None, record_exception: bool, set_status_on_exception: bool) -> trace.Span:
        """``start_span`` for what the C part leaves (or all of it, without the C part)."""
        if links:
            return self._sdk_span(name, context, kind, attributes, links, start_time, record_exception,
                                  set_status_on_exception)
        current = (context if context is not None else current_context()).get(_SPAN_KEY)
        if type(current) is LeanSpan:  # what ``trace.get_current_span`` finds, without its ABC check
            parent = current._context
        elif type(current) is NonRecordingSpan:
            parent = current.get_span_context()
        elif current is None:
            parent = trace.INVALID_SPAN_CONTEXT
        else:
            parent = trace.get_current_span(context).get_span_context()
        # a SpanContext is the tuple (trace_id, span_id, is_remote, flags, state, is_valid): read
        # as one, not through six properties (the layout is checked at import: span_path)
        trace_id, _, _, parent_flags, parent_state, valid = parent if CONTEXT_IS_TUPLE else (
            parent.trace_id, 0, False, parent.trace_flags, parent.trace_state, parent.is_valid)
        if valid:
            random_flag = parent_flags & TraceFlags.RANDOM_TRACE_ID
        else:
            parent, trace_id, random_flag = None, self.ids.generate_trace_id(), self._random_ids
        attrs = None  # built only for a span that records, or a sampler that asks for them
        if parent is not None and self._follow_parent:
            sampled = recording = bool(parent_flags & TraceFlags.SAMPLED)
            trace_state = parent_state
        elif parent is None and self._sample_roots:
            sampled, recording, trace_state = True, True, trace.DEFAULT_TRACE_STATE
        else:
            attrs = self._attributes(attributes)
            if attrs is None:
                return self._sdk_span(name, context, kind, attributes, links, start_time, record_exception,
                                      set_status_on_exception)
            result = self.sampler.should_sample(context, trace_id, name, kind, attrs)
            sampled, recording = result.decision.is_sampled(), result.decision.is_recording()
            trace_state = result.trace_state if result.trace_state is not None else trace.DEFAULT_TRACE_STATE
            if recording and not sampled:
                return self._sdk_span(name, context, kind, attributes, links, start_time, record_exception,
                                      set_status_on_exception)
        flags = TRACE_FLAGS[(TraceFlags.SAMPLED if sampled else 0) | random_flag]
        span_context = valid_span_context(trace_id, self.ids.generate_span_id(), flags, trace_state)
        if not recording:
            return trace.NonRecordingSpan(span_context)
        if attrs is None:
            attrs = self._attributes(attributes)
            if attrs is None:
                return self._sdk_span(name, context, kind, attributes, links, start_time, record_exception,
                                      set_status_on_exception)
        return LeanSpan(self, name, span_context, parent, kind, attrs,
                        start_time if start_time is not None else time.time_ns(), record_exception,
                        set_status_on_exception)

    def start_as_current_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL,
                              attributes: Any = None, links: Any = None, start_time: int | None = None,
                              record_exception: bool = True, set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Any:
        if _span_core is not None and context is None and not links:  # the common case, in C
            current = _span_core.start_current(self._core_state, self, name, kind, attributes, start_time,
                                               record_exception, set_status_on_exception, end_on_exit)
            if current is not NotImplemented:
                return current
        # the C part was asked above, or cannot take it: not asked again through start_span
        span = self._start_in_python(name, context, kind, attributes, links, start_time, record_exception,
                                     set_status_on_exception)
        return Current(span, end_on_exit, record_exception, set_status_on_exception)


class OffTracer(trace.NoOpTracer):
    """The tracer with the SDK off (``OTEL_SDK_DISABLED=true``): the API's no-op tracer, whose
    ``start_as_current_span`` nests two generator-based context managers (~3.3 µs a span, as
    much as a recorded ``LeanSpan`` here), with its span made current as ``_Current`` does it
    (~1.3 µs). As with the API's tracer, that span is a non-recording one with its parent's
    context (trace context passes through a node with tracing off) and nothing is recorded."""

    def start_as_current_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL,
                              attributes: Any = None, links: Any = None, start_time: int | None = None,
                              record_exception: bool = True, set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Any:
        return Current(self.start_span(name, context), False, False, False)


if _span_core is not None:
    from opentelemetry import baggage as _baggage

    _span_core.configure(SpanContext, NonRecordingSpan, Context, _CONTEXT, _SPAN_KEY,
                         tuple(TRACE_FLAGS[bits] for bits in range(256)), trace.DEFAULT_TRACE_STATE, UNSET_STATUS,
                         _exit_failed, context_api.detach, getattr(_baggage, "_BAGGAGE_KEY", None))
