"""The two bits of bookkeeping every gossip core shares: rumors to push, and ids already seen.

``RumorQueue``: a piece of news goes out in ``rounds()`` consecutive push batches (the newest
first when a batch is full), then is dropped. ``SeenIds``: message ids (blake3 of the signed
bytes) remembered for a fixed time, so a duplicate costs one hash and one dict lookup.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Rumor:
    raw: bytes
    last_push: int  # the number of the last push batch it goes out in


class RumorQueue:
    """News to push, each item for ``rounds()`` batches."""

    def __init__(self, rounds: Callable[[], int], max_batch: int) -> None:
        self.rounds = rounds
        self.max_batch = max_batch
        self._rumors: dict[bytes, _Rumor] = {}  # oldest first
        self._ends: list[tuple[int, bytes]] = []  # heap of (last push, msg id)
        self._pushes = 0

    def __len__(self) -> int:
        return len(self._rumors)

    def add(self, msg_id: bytes, raw: bytes) -> None:
        last_push = self._pushes + self.rounds()
        self._rumors[msg_id] = _Rumor(raw, last_push)
        heapq.heappush(self._ends, (last_push, msg_id))

    def take(self) -> tuple[bytes, ...]:
        """The newest rumors, up to a batch's worth; drops those whose rounds are over
        (cost: the batch and the dropped, not every rumor)."""
        self._pushes += 1
        newest = itertools.islice(reversed(self._rumors.values()), self.max_batch)
        batch = tuple(r.raw for r in newest)[::-1]
        ends = self._ends
        while ends and ends[0][0] <= self._pushes:
            last_push, msg_id = heapq.heappop(ends)
            rumor = self._rumors.get(msg_id)
            if rumor is not None and rumor.last_push == last_push:
                del self._rumors[msg_id]
        return batch


class SeenIds:
    """Message ids seen within the last ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._until: dict[bytes, float] = {}  # message id -> when to forget it
        self._order: deque[tuple[float, bytes]] = deque()

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._until

    def add(self, msg_id: bytes, now: float) -> None:
        until = now + self.ttl
        self._until[msg_id] = until
        self._order.append((until, msg_id))

    def forget(self, now: float) -> None:
        # ``_order`` is in expiry order (the ttl is fixed, time only moves on), so forgetting
        # costs only the ids that expire, not a scan of every id seen.
        order = self._order
        while order and order[0][0] <= now:
            until, msg_id = order.popleft()
            if self._until.get(msg_id) == until:
                del self._until[msg_id]
