"""A finished span as a receiver keeps it: plain values and hex ids, whatever carried it.

Spans arrive two ways: over OTLP (``fabric.otlp`` decodes export bodies, and loads protobuf
to do it) and, in the console, straight from its own SDK (``from_sdk``). Both give the same
``CapturedSpan`` (the test checks one against the other), so a console that only ever sees
its own spans never loads protobuf (~2.5 MB of a ~58 MB process) and skips an encode and a
decode per span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan


@dataclass(frozen=True)
class CapturedSpan:
    """One span as received, with ids as lowercase hex strings.

    ``kind`` is ``"INTERNAL"``, ``"SERVER"``, ``"CLIENT"``, ``"PRODUCER"``,
    ``"CONSUMER"`` (or ``"UNSPECIFIED"``); ``status`` is ``"UNSET"``, ``"OK"`` or
    ``"ERROR"``. Attribute values are plain Python values (arrays become lists,
    key/value lists become dicts). ``events`` holds ``(name, attributes)`` pairs,
    ``links`` holds ``(trace_id, span_id)`` pairs.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str = "UNSET"
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    service_name: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    scope: str = ""

    def __hash__(self) -> int:  # the dict/list fields are unhashable; ids identify a span
        return hash((self.trace_id, self.span_id))

    @property
    def duration_ns(self) -> int:
        """End minus start time, in nanoseconds."""
        return self.end_ns - self.start_ns

    @property
    def is_root(self) -> bool:
        """True when the span has no parent."""
        return self.parent_span_id is None

    def describe(self) -> str:
        """A one-line ``service: name`` summary used in timeout messages."""
        return f"{self.service_name or '?'}: {self.name}"


def _plain(value: Any) -> Any:
    """An attribute value as OTLP carries it back: sequences as lists, mappings as dicts."""
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return value


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: _plain(value) for key, value in (attributes or {}).items()}


def from_sdk(span: ReadableSpan) -> CapturedSpan:
    """The ``CapturedSpan`` an OTLP receiver would make of this finished SDK span."""
    context, parent = span.get_span_context(), span.parent
    resource = _attributes(span.resource.attributes)
    scope = span.instrumentation_scope
    return CapturedSpan(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        kind=span.kind.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        status=span.status.status_code.name,
        status_message=span.status.description or "",
        attributes=_attributes(span.attributes),
        resource=resource,
        service_name=str(resource.get("service.name", "")),
        events=[(event.name, _attributes(event.attributes)) for event in span.events],
        links=[(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in span.links],
        scope=scope.name if scope is not None else "",
    )
