"""The span a node records: ``LeanSpan``, and once ended the ``ReadableSpan`` its processors get.

A span is three objects kept (itself, its attributes, its context): the ring of recent spans
holds 256 of them, and every object it holds is one the garbage collector walks. It keeps
attributes in a plain dict (values of the types OTel allows, sequences as tuples), takes no lock
(a node's spans live on its event loop's thread) and, once ended, is frozen as the SDK's own
span is. Its fields and ``end`` are ``fabric/_span_core.c``'s ``SpanCore`` where the install
built it (``fabric/span_path.py`` says when), else ``_PySpanFields`` here. ``spans.LeanTracer``
makes them.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from . import span_path
from .span_path import CONTEXT_IS_TUPLE

if TYPE_CHECKING:
    from .spans import LeanTracer

log = logging.getLogger(__name__)

SCALAR_TYPES = frozenset((str, bool, int, float))  # an attribute's value types, as OTel allows them
INVALID = object()  # what ``clean`` gives for a value OTel does not allow
TRACE_FLAGS = {bits: TraceFlags(bits) for bits in range(256)}  # 0-3: sampled x random trace id
UNSET_STATUS = Status(StatusCode.UNSET)  # immutable: shared by every span until one sets its own


def valid_span_context(trace_id: int, span_id: int, flags: TraceFlags, state: Any,
                       is_remote: bool = False) -> SpanContext:
    """``SpanContext(...)`` for ids known to be valid (non-zero, in range), without its range
    checks when the layout allows (else the constructor)."""
    if CONTEXT_IS_TUPLE:
        return tuple.__new__(SpanContext, (trace_id, span_id, is_remote, flags, state, True))
    return SpanContext(trace_id, span_id, is_remote, flags, state)


def clean(value: Any) -> Any:
    """An attribute value as the SDK would store it, or ``INVALID``."""
    kind = type(value)
    if kind in SCALAR_TYPES:
        return value
    if kind in (list, tuple) and len({type(v) for v in value}) <= 1 and all(type(v) in SCALAR_TYPES for v in value):
        return tuple(value)
    return INVALID


class _PySpanFields:
    """A ``LeanSpan``'s fields and its ``end``, in Python: where ``fabric._span_core`` (the
    same in C) was not built, or is switched off (``MESHFABRIC_SPAN_CORE=python``)."""

    __slots__ = ("_tracer", "_name", "_context", "_parent", "_kind", "_attributes", "_events", "_links",
                 "_status", "_start_time", "_end_time", "_record_exception", "_set_status_on_exception",
                 "_resource", "_instrumentation_scope", "_instrumentation_info")

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else time.time_ns()
        self._events, self._links = tuple(self._events), tuple(self._links)
        processor = self._tracer.processor
        # The provider's multi-processor only loops over its processors: loop here (its tuple
        # is replaced, not changed, when one is added, so it is read at every end).
        for each in getattr(processor, "_span_processors", None) or (processor,):
            each.on_end(self)


SPAN_CORE = span_path.load_core()  # fabric._span_core where it is used, else None: read once, here
_SpanFields: type = SPAN_CORE.SpanCore if SPAN_CORE is not None else _PySpanFields
# The C type a LeanSpan's fields live in (_span_core.SpanCore, fabric/_span_fields.h), or None
# where they are Python attributes: what the encoder's C part may read a span's fields from.
FIELDS_IN_C: type | None = SPAN_CORE.SpanCore if _SpanFields is not _PySpanFields else None


class LeanSpan(_SpanFields, trace.Span, ReadableSpan):  # type: ignore[misc,valid-type]
    """A recording span, and once ended the ``ReadableSpan`` the processors get (no copy).

    Unlike the SDK's span it takes no lock: a node's spans live on its event loop's thread.
    Read access (``name``, ``attributes``, ``events``, ``resource``, ...) is ``ReadableSpan``'s;
    the fields, ``end``, ``is_recording`` and ``get_span_context`` are ``_SpanFields``' (C or
    Python).
    """

    __slots__ = ()

    def __init__(self, tracer: LeanTracer, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: dict[str, Any], start_time: int, record_exception: bool,
                 set_status_on_exception: bool) -> None:
        self._tracer, self._name, self._context, self._parent, self._kind = tracer, name, context, parent, kind
        self._attributes, self._events, self._links = attributes, (), ()  # lists once one is added
        self._status, self._resource, self._instrumentation_scope = UNSET_STATUS, tracer.resource, tracer.scope
        self._instrumentation_info = None
        self._start_time, self._end_time = start_time, None
        self._record_exception, self._set_status_on_exception = record_exception, set_status_on_exception

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None:
            return
        if type(value) in SCALAR_TYPES and type(key) is str and key:  # the common case, without a call
            self._attributes[key] = value
            return
        cleaned = clean(value)
        if cleaned is INVALID or not isinstance(key, str) or not key:
            log.warning("invalid span attribute %r=%r dropped", key, value)
            return
        self._attributes[key] = cleaned

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end_time is None:
            cleaned = {k: clean(v) for k, v in (attributes or {}).items()}
            kept = {k: v for k, v in cleaned.items() if v is not INVALID}
            self._events = list(self._events)
            self._events.append(Event(name, kept, timestamp if timestamp is not None else time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self._end_time is None and context is not None and context.is_valid:
            self._links = list(self._links)
            self._links.append(trace.Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: OK is final, UNSET is ignored."""
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:
        """The SDK's ``exception`` event: type, message, stack trace, escaped."""
        module, qualname = type(exception).__module__, type(exception).__qualname__
        event = {"exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
                 "exception.message": str(exception),
                 "exception.stacktrace": "".join(traceback.format_exception(exception)),
                 "exception.escaped": str(escaped), **(attributes or {})}
        self.add_event("exception", event, timestamp)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.end()

    def __repr__(self) -> str:
        return f'LeanSpan(name="{self._name}", context={self._context})'


OWN_SPANS = frozenset((LeanSpan, NonRecordingSpan))  # the span types a LeanTracer makes
