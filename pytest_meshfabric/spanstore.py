"""An in-memory, thread-safe store of the spans a test captured.

Spans arrive from :class:`pytest_meshfabric.capture.OtlpReceiver` threads; tests
read them with :meth:`SpanStore.find` or block on :meth:`SpanStore.wait_for`, which
sleeps on a condition variable that every :meth:`SpanStore.add` notifies.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from fabric.otlp import CapturedSpan

T = TypeVar("T")

__all__ = ["CapturedSpan", "SpanStore", "SpanWaitTimeout", "glob_match", "span_matches"]

#: How many "service: span name" lines a timeout message shows.
SUMMARY_LINES = 20


class SpanWaitTimeout(AssertionError):
    """A wait on the span store ran out of time; the message lists what was seen."""


class _Cancelled(Exception):
    """Internal: an ``await_*`` call was cancelled while its thread was waiting."""


def summarize(spans: list[CapturedSpan], last: int = SUMMARY_LINES) -> str:
    """Summarise ``spans``: their count and the last ``last`` of them, one per line."""
    traces = len({s.trace_id for s in spans})
    head = f"saw {len(spans)} span(s) in {traces} trace(s)"
    if not spans:
        return head
    shown = spans[-last:]
    lines = [f"  {s.describe()}" for s in shown]
    more = f" (last {len(shown)})" if len(shown) < len(spans) else ""
    return head + more + ":\n" + "\n".join(lines)


class SpanStore:
    """Thread-safe list of :class:`CapturedSpan`, in arrival order."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._spans: list[CapturedSpan] = []
        self._version = 0  # bumped by add() and clear(); waiters re-check on change
        self._dropped = 0  # spans forgotten by clear(): marks stay valid across it
        self._last_add = time.monotonic()

    # -- writing ---------------------------------------------------------------

    def add(self, spans: Iterable[CapturedSpan]) -> None:
        """Append ``spans`` and wake every waiter."""
        batch = list(spans)
        if not batch:
            return
        with self._cond:
            self._spans.extend(batch)
            self._version += 1
            self._last_add = time.monotonic()
            self._cond.notify_all()

    def clear(self) -> None:
        """Forget every captured span."""
        with self._cond:
            self._dropped += len(self._spans)
            self._spans.clear()
            self._version += 1
            self._cond.notify_all()

    # -- reading ---------------------------------------------------------------

    def all(self, since: int = 0) -> list[CapturedSpan]:
        """A snapshot of every span (arrived after :meth:`mark` ``since``), in arrival order."""
        with self._cond:
            return self._spans[max(0, since - self._dropped):]

    def mark(self) -> int:
        """A position in the stream of spans: ``all(since=mark)`` is what arrived after it."""
        with self._cond:
            return self._dropped + len(self._spans)

    def __len__(self) -> int:
        with self._cond:
            return len(self._spans)

    def traces(self) -> dict[str, list[CapturedSpan]]:
        """Spans grouped by trace id (traces in first-seen order, spans by start time)."""
        grouped: dict[str, list[CapturedSpan]] = {}
        for span in self.all():
            grouped.setdefault(span.trace_id, []).append(span)
        for spans in grouped.values():
            spans.sort(key=lambda s: s.start_ns)
        return grouped

    def find(
        self,
        name: str | None = None,
        service: str | None = None,
        trace_id: str | None = None,
        **attributes: Any,
    ) -> list[CapturedSpan]:
        """Spans matching every given criterion.

        ``name`` and ``service`` are exact names or :mod:`fnmatch` globs
        (``"mesh1.broker.*"``); each keyword argument must equal the span attribute of
        that key. Dotted keys go through a dict: ``find(**{"mesh.id": "m1"})``.
        """
        return [s for s in self.all() if span_matches(s, name, service, trace_id, attributes)]

    # -- waiting ---------------------------------------------------------------

    def wait_for(
        self,
        predicate: Callable[[list[CapturedSpan]], T],
        timeout: float = 10.0,
        description: str | Callable[[], str] = "",
        *,
        since: int = 0,
        _cancel: threading.Event | None = None,
    ) -> T:
        """Block until ``predicate(all spans)`` is truthy and return its value.

        The predicate runs outside the lock, once now and again after each change to
        the store, on the spans that arrived after mark ``since``. Raises
        :class:`SpanWaitTimeout` after ``timeout`` seconds; ``description`` (a string,
        or a callable for a message computed at timeout) says what was awaited.
        """
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            with self._cond:
                while self._version == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (_cancel is not None and _cancel.is_set()):
                        break
                    self._cond.wait(remaining)
                if _cancel is not None and _cancel.is_set():
                    raise _Cancelled()
                changed = self._version != seen
                seen = self._version
                snapshot = self._spans[max(0, since - self._dropped):]
            if changed:
                result = predicate(snapshot)
                if result:
                    return result
            if time.monotonic() >= deadline:
                what = (description() if callable(description) else description) or getattr(
                    predicate, "__name__", repr(predicate))
                raise SpanWaitTimeout(f"timed out after {timeout:g}s waiting for {what}; {summarize(snapshot)}")

    def wait_for_span(self, timeout: float = 10.0, *, since: int = 0, **criteria: Any) -> CapturedSpan:
        """Wait for the first span (after mark ``since``) matching :meth:`find` ``criteria``."""
        keys = ("name", "service", "trace_id")
        named = {k: criteria.pop(k, None) for k in keys}

        def first_match(spans: list[CapturedSpan]) -> CapturedSpan | None:
            return next((s for s in spans if span_matches(s, *named.values(), criteria)), None)

        shown = ", ".join(f"{k}={v!r}" for k, v in {**named, **criteria}.items() if v is not None)
        return self.wait_for(first_match, timeout, f"a span with {shown}", since=since)

    def wait_quiescent(
        self, quiet: float = 0.3, timeout: float = 10.0, *, since: int = 0,
        _cancel: threading.Event | None = None
    ) -> list[CapturedSpan]:
        """Return all spans (after mark ``since``) once none has arrived for ``quiet`` seconds.

        Quiet time counts from the later of this call and the last arrival. Raises
        :class:`SpanWaitTimeout` if spans keep arriving for ``timeout`` seconds.
        """
        start = time.monotonic()
        deadline = start + timeout
        with self._cond:
            while True:
                if _cancel is not None and _cancel.is_set():
                    raise _Cancelled()
                now = time.monotonic()
                quiet_until = max(self._last_add, start) + quiet
                if now >= quiet_until:
                    return self._spans[max(0, since - self._dropped):]
                if now >= deadline:
                    raise SpanWaitTimeout(
                        f"timed out after {timeout:g}s waiting for {quiet:g}s without new spans; "
                        f"{summarize(self._spans)}"
                    )
                self._cond.wait(min(quiet_until, deadline) - now)

    # -- asyncio variants ------------------------------------------------------

    async def await_for(
        self,
        predicate: Callable[[list[CapturedSpan]], T],
        timeout: float = 10.0,
        description: str | Callable[[], str] = "",
        *,
        since: int = 0,
    ) -> T:
        """:meth:`wait_for` in a worker thread, for async tests."""
        return await self._in_thread(
            lambda cancel: self.wait_for(predicate, timeout, description, since=since, _cancel=cancel))

    async def await_quiescent(self, quiet: float = 0.3, timeout: float = 10.0, *, since: int = 0
                              ) -> list[CapturedSpan]:
        """:meth:`wait_quiescent` in a worker thread, for async tests."""
        return await self._in_thread(lambda cancel: self.wait_quiescent(quiet, timeout, since=since, _cancel=cancel))

    async def _in_thread(self, wait: Callable[[threading.Event], T]) -> T:
        # On cancellation, wake the worker thread so it does not linger until its
        # deadline (asyncio.run waits for default-executor threads on shutdown).
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(wait, cancel)
        except asyncio.CancelledError:
            cancel.set()
            with self._cond:
                self._cond.notify_all()
            raise


def span_matches(
    span: CapturedSpan,
    name: str | None,
    service: str | None,
    trace_id: str | None,
    attributes: dict[str, Any],
) -> bool:
    if name is not None and not glob_match(span.name, name):
        return False
    if service is not None and not glob_match(span.service_name, service):
        return False
    if trace_id is not None and span.trace_id != trace_id.lower():
        return False
    missing = object()
    return all(span.attributes.get(k, missing) == v for k, v in attributes.items())


def glob_match(value: str, pattern: str) -> bool:
    """``value`` equals ``pattern`` or matches it as an :mod:`fnmatch` glob (``mesh1.gateway.*``)."""
    return value == pattern or fnmatchcase(value, pattern)
