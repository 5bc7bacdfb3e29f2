"""The ``spans`` fixture's object: the spans captured while the current test ran, and waits on them.

Each process exports on its own schedule, so a test never assumes a span is there: it waits
(``wait_for_trace``, ``wait_for``, ``wait_quiescent``), each with a deadline and a timeout
error that lists what did arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from . import artifacts
from .shapes import Shape, ShapeLike, match
from .spanstore import CapturedSpan, SpanStore, SpanWaitTimeout, span_matches
from .traces import Trace, find_traces

T = TypeVar("T")
TraceCondition = Callable[[Trace], bool]

__all__ = ["SpanView", "SpanWaitTimeout"]  # every wait raises SpanWaitTimeout


class SpanView:
    """Spans that arrived after a mark (for the ``spans`` fixture: since the test function started)."""

    def __init__(self, store: SpanStore, since: int = 0) -> None:
        self.store = store
        self.since = since

    def restart(self) -> None:
        """Move the mark to now: earlier spans are no longer in view."""
        self.since = self.store.mark()

    @property
    def session(self) -> SpanView:
        """Every span captured in this pytest process (boot traces of shared clusters included)."""
        return SpanView(self.store, 0)

    # -- reading --

    def all(self) -> list[CapturedSpan]:
        return self.store.all(since=self.since)

    def __len__(self) -> int:
        return len(self.all())

    def __iter__(self) -> Iterator[CapturedSpan]:
        return iter(self.all())

    def find(self, name: str | None = None, service: str | None = None, trace_id: str | None = None,
             **attributes: Any) -> list[CapturedSpan]:
        """Spans by name and service (exact or glob), trace id and attribute values."""
        return [s for s in self.all() if span_matches(s, name, service, trace_id, attributes)]

    def traces(self, root: str | None = None, service: str | None = None, **attributes: Any) -> list[Trace]:
        """Traces whose root is named ``root``, with a span of ``service`` and one with ``attributes``."""
        return find_traces(self.all(), root, service, **attributes)

    def trace(self, root: str | None = None, service: str | None = None, **attributes: Any) -> Trace:
        """The one trace matching :meth:`traces` (``AssertionError`` listing the traces otherwise)."""
        found = self.traces(root, service, **attributes)
        if len(found) != 1:
            raise AssertionError(f"expected one trace with root={root!r} service={service!r} {attributes or ''}, "
                                 f"found {len(found)}; {self._overview()}")
        return found[0]

    def _overview(self) -> str:
        roots = [f"{t.root.name} [{t.root.service_name}]" for t in find_traces(self.all()) if t.root]
        return f"traces in view by root: {roots or 'none'}"

    # -- waiting --

    def wait_for(self, predicate: Callable[[list[CapturedSpan]], T], timeout: float = 10.0,
                 description: str = "") -> T:
        """Block until ``predicate(spans in view)`` is truthy; return its value."""
        return self.store.wait_for(predicate, timeout, description, since=self.since)

    def wait_for_span(self, timeout: float = 10.0, **criteria: Any) -> CapturedSpan:
        """The first span in view matching ``criteria`` (as for :meth:`find`), once it arrives."""
        return self.store.wait_for_span(timeout, since=self.since, **criteria)

    def wait_quiescent(self, quiet: float = 0.3, timeout: float = 10.0) -> list[CapturedSpan]:
        """The spans in view, once none has arrived for ``quiet`` seconds."""
        return self.store.wait_quiescent(quiet, timeout, since=self.since)

    def wait_for_trace(self, root: str | None = None, *, service: str | None = None,
                       until: ShapeLike | TraceCondition | None = None, timeout: float = 10.0,
                       **attributes: Any) -> Trace:
        """Wait for a trace found as by :meth:`traces` that is connected (one root, no orphans)
        and, with ``until``, matches that shape or makes that predicate true.

        With a shape, a timeout shows the diff of the latest candidate against it.
        """
        shape = None if until is None or callable(until) else Shape.parse(until)
        condition = self._condition(until, shape)
        found = self.store.wait_for(
            lambda spans: next((t for t in reversed(find_traces(spans, root, service, **attributes))
                                if condition(t)), None),
            timeout, lambda: self._timeout_message(root, service, attributes, shape), since=self.since)
        if shape is not None:
            artifacts.note(found, None, key=("shape", shape.key))
        return found

    async def await_for(self, predicate: Callable[[list[CapturedSpan]], T], timeout: float = 10.0,
                        description: str = "") -> T:
        """:meth:`wait_for` for async tests (the event loop keeps running)."""
        return await self.store.await_for(predicate, timeout, description, since=self.since)

    async def await_quiescent(self, quiet: float = 0.3, timeout: float = 10.0) -> list[CapturedSpan]:
        """:meth:`wait_quiescent` for async tests."""
        return await self.store.await_quiescent(quiet, timeout, since=self.since)

    async def await_trace(self, root: str | None = None, *, service: str | None = None,
                          until: ShapeLike | TraceCondition | None = None, timeout: float = 10.0,
                          **attributes: Any) -> Trace:
        """:meth:`wait_for_trace` for async tests."""
        return await asyncio.to_thread(self.wait_for_trace, root, service=service, until=until, timeout=timeout,
                                       **attributes)

    @staticmethod
    def _condition(until: ShapeLike | TraceCondition | None, shape: Shape | None) -> TraceCondition:
        def connected(trace: Trace) -> bool:
            return trace.root is not None and not trace.orphans

        if shape is not None:
            return lambda trace: connected(trace) and bool(match(shape, trace))
        if until is not None:
            return lambda trace: connected(trace) and bool(until(trace))  # type: ignore[operator]
        return connected

    def _timeout_message(self, root: str | None, service: str | None, attributes: dict[str, Any],
                         shape: Shape | None) -> str:
        what = f"a complete trace with root={root!r} service={service!r} {attributes or ''}".rstrip()
        candidates = find_traces(self.all(), root, service, **attributes)
        if shape is None or not candidates:
            return f"{what}; {len(candidates)} candidate(s); {self._overview()}"
        result = match(shape, candidates[-1])
        artifacts.note(candidates[-1], result.explain(), key=("shape", shape.key))
        return f"{what} matching the shape; the latest candidate differs:\n{result.explain()}\n"

