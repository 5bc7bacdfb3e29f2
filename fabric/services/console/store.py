"""The console's span store: the spans it received, grouped by trace, bounded in memory.

Traces are kept in arrival order; when the store holds more than ``max_spans`` spans the
oldest traces go first, whole. A span that arrives twice (an exporter retry, or the console's
own spans reaching it both in-process and over OTLP) is stored once. Everything here is plain
state without I/O, so it is tested without a server.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...captured import CapturedSpan

DEFAULT_MAX_SPANS = 20_000
DEFAULT_MAX_SPANS_PER_TRACE = 2_000


@dataclass
class _Trace:
    spans: dict[str, CapturedSpan]
    summary: dict[str, Any] | None = None  # cached until the trace gets a new span


def span_dict(span: CapturedSpan) -> dict[str, Any]:
    """A span as the console's API shows it: ids in hex, times in ns since the epoch."""
    return {
        "trace_id": span.trace_id, "span_id": span.span_id, "parent_span_id": span.parent_span_id,
        "name": span.name, "service": span.service_name, "kind": span.kind,
        "start_ns": span.start_ns, "end_ns": span.end_ns, "duration_ns": max(0, span.duration_ns),
        "status": span.status, "status_message": span.status_message,
        "attributes": span.attributes, "resource": span.resource,
        "events": [{"name": name, "attributes": attrs} for name, attrs in span.events],
        "links": [{"trace_id": t, "span_id": s} for t, s in span.links],
    }


def _matches(span: CapturedSpan, service: str, name: str) -> bool:
    return service in span.service_name.lower() and name in span.name.lower()


class SpanStore:
    """Spans by trace, newest traces last, at most ``max_spans`` in all."""

    def __init__(self, max_spans: int = DEFAULT_MAX_SPANS,
                 max_spans_per_trace: int = DEFAULT_MAX_SPANS_PER_TRACE) -> None:
        if max_spans < 1 or max_spans_per_trace < 1:
            raise ValueError("max_spans and max_spans_per_trace must be positive")
        self.max_spans = max_spans
        self.max_spans_per_trace = min(max_spans_per_trace, max_spans)
        self._traces: OrderedDict[str, _Trace] = OrderedDict()
        self._count = 0
        self.version = 0  # moves whenever the stored spans change
        self.stats = {"received": 0, "duplicates": 0, "dropped_over_trace_cap": 0, "evicted": 0}

    def __len__(self) -> int:
        return self._count

    @property
    def trace_count(self) -> int:
        return len(self._traces)

    def add(self, spans: Iterable[CapturedSpan]) -> list[CapturedSpan]:
        """Store ``spans``; return those that were new (not duplicates, not over a cap)."""
        fresh: list[CapturedSpan] = []
        for span in spans:
            self.stats["received"] += 1
            trace = self._traces.get(span.trace_id)
            if trace is None:
                trace = self._traces[span.trace_id] = _Trace({})
            if span.span_id in trace.spans:
                self.stats["duplicates"] += 1
                continue
            if len(trace.spans) >= self.max_spans_per_trace:
                self.stats["dropped_over_trace_cap"] += 1
                continue
            trace.spans[span.span_id] = span
            trace.summary = None
            self._count += 1
            fresh.append(span)
        self._evict()
        if fresh:
            self.version += 1
        return fresh

    def _evict(self) -> None:
        while self._count > self.max_spans:
            _, oldest = self._traces.popitem(last=False)
            self._count -= len(oldest.spans)
            self.stats["evicted"] += len(oldest.spans)
        while self._traces and not next(iter(self._traces.values())).spans:
            self._traces.popitem(last=False)  # a trace whose every span was refused

    # -- asking ----------------------------------------------------------------

    def trace(self, trace_id: str) -> list[CapturedSpan] | None:
        """The spans of one trace in start order, or ``None`` if it is not (or no longer) here."""
        trace = self._traces.get(trace_id)
        if trace is None or not trace.spans:
            return None
        return sorted(trace.spans.values(), key=lambda s: (s.start_ns, s.end_ns))

    def search(self, service: str = "", name: str = "", offset: int = 0,
               limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
        """Trace summaries, newest first: ``(how many match, one page of them)``.

        A trace matches when one of its spans has ``service`` in its service name and ``name``
        in its span name (case-insensitive substrings; empty matches everything).
        """
        service, name = service.lower(), name.lower()
        found = [self._summary(trace_id, t) for trace_id, t in self._traces.items()
                 if t.spans and (not (service or name) or any(_matches(s, service, name) for s in t.spans.values()))]
        found.sort(key=lambda s: s["start_ns"], reverse=True)
        return len(found), found[offset:offset + limit]

    def summary(self, trace_id: str) -> dict[str, Any] | None:
        trace = self._traces.get(trace_id)
        return self._summary(trace_id, trace) if trace is not None and trace.spans else None

    def _summary(self, trace_id: str, trace: _Trace) -> dict[str, Any]:
        if trace.summary is None:
            spans = trace.spans.values()
            start = min(s.start_ns for s in spans)
            end = max(s.end_ns for s in spans)
            roots = [s for s in spans if s.parent_span_id is None or s.parent_span_id not in trace.spans]
            root = min(roots, key=lambda s: (s.parent_span_id is not None, s.start_ns))
            services = sorted({s.service_name for s in spans})
            trace.summary = {
                "trace_id": trace_id, "root_name": root.name, "root_service": root.service_name,
                "root_complete": root.parent_span_id is None,
                "span_count": len(trace.spans), "services": services,
                "start_ns": start, "duration_ns": max(0, end - start),
                "errors": sum(1 for s in spans if s.status == "ERROR"),
            }
        return trace.summary
