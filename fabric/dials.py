"""Dials in flight, shared by the callers that want the same connection, unless stale.

QUIC resends a handshake packet nobody answered only after a backoff: measured here with iroh,
a dial started while the path was cut completes ~1 s after its start (then ~3 s), however soon
the cut heals, while a fresh dial after the heal takes milliseconds. A caller that waited for
such a dial (as every caller of the same peer did, behind one lock) lost up to a second after
every partition. Here a caller shares a dial only while it is young; one that comes once the
dial is older than ``stale_after`` starts a fresh one beside it, and whichever connects first
is kept by the transport (see ``Transport.connect``). A dial nobody waits for any more is
cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

#: A handshake on a live path takes milliseconds here; on a slow one (the chaos harness's latency
#: fault adds up to 0.4 s a round trip) a fresh dial beside a young one costs one handshake more.
STALE_AFTER = 0.25


class _Dial(Generic[T]):
    __slots__ = ("started", "task", "waiters")

    def __init__(self, task: asyncio.Future[T], started: float) -> None:
        self.task, self.started, self.waiters = task, started, 0


class Dials(Generic[T]):
    """The newest dial per key; ``join`` waits for it, or starts one if there is none or it is stale."""

    def __init__(self, stale_after: float = STALE_AFTER) -> None:
        self.stale_after = stale_after
        self.started = 0  # dials started so far
        self._newest: dict[Hashable, _Dial[T]] = {}

    def in_flight(self, key: Hashable) -> bool:
        dial = self._newest.get(key)
        return dial is not None and not dial.task.done()

    async def join(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        """The result of ``key``'s young dial in flight, or of a new one made by ``start()``.

        Cancelling the caller (a timeout) leaves the dial to its other waiters; the last one
        to leave cancels it.
        """
        now = asyncio.get_running_loop().time()
        dial = self._newest.get(key)
        if dial is None or dial.task.done() or now - dial.started >= self.stale_after:
            dial = self._newest[key] = _Dial(asyncio.ensure_future(start()), now)
            self.started += 1
        dial.waiters += 1
        try:
            return await asyncio.shield(dial.task)
        finally:
            dial.waiters -= 1
            if not dial.waiters or dial.task.done():
                dial.task.cancel()  # nobody waits for it any more (no-op once it is done)
                if self._newest.get(key) is dial:
                    del self._newest[key]
