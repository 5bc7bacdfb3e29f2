"""Probe bookkeeping for the backbone core, with SWIM's indirect probes. Plain state, no I/O.

A member probes a peer directly. If no reply came within ``direct_timeout`` it asks up to
``k`` other members to probe the peer for it (a ``ProbeRequest``, SWIM's *ping-req*); a helper
whose probe is answered says so (a ``ProbeAck``). Only if neither the peer nor any helper
answered within ``timeout`` does the prober suspect the peer. A lossy or one-way link between
two members then no longer makes them suspect each other, as long as others reach both.

The tracker keeps both roles: the probes this member waits for, and the probes it relays
for others (who asked, about whom, until when).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_EPSILON = 1e-9  # a deadline "at" a tick is due at that tick, despite float sums


@dataclass
class Pending:
    """A probe this member waits for."""

    direct_until: float  # ask helpers after this
    until: float         # suspect after this
    helpers: tuple[str, ...] = ()
    asked: bool = False


class ProbeTracker:
    """Who this member waits for, and for whom it relays."""

    def __init__(self, direct_timeout: float, timeout: float) -> None:
        self.direct_timeout = direct_timeout
        self.timeout = timeout
        self._pending: dict[str, Pending] = {}
        self._relays: dict[str, dict[str, float]] = {}  # target -> requester -> forget at

    def __contains__(self, target: str) -> bool:
        return target in self._pending

    # -- as the prober ---------------------------------------------------------

    def start(self, target: str, now: float) -> None:
        """A direct probe of ``target`` went out at ``now``."""
        self._pending[target] = Pending(now + self.direct_timeout, now + self.timeout)

    def answered(self, target: str) -> bool:
        """``target`` replied (late, even): it is not suspected. False if nobody waited."""
        return self._pending.pop(target, None) is not None

    def acked(self, helper: str, target: str) -> bool:
        """``helper`` says ``target`` answered it: True if we asked ``helper`` about ``target``
        and still wait, else False (an unsolicited ack changes nothing)."""
        pending = self._pending.get(target)
        if pending is None or helper not in pending.helpers:
            return False
        del self._pending[target]
        return True

    def due(self, now: float) -> tuple[list[str], list[str]]:
        """``(targets to ask helpers about now, targets that timed out)``; the latter are forgotten."""
        ask: list[str] = []
        failed: list[str] = []
        for target, pending in list(self._pending.items()):
            if pending.until <= now + _EPSILON:
                del self._pending[target]
                failed.append(target)
            elif not pending.asked and pending.direct_until <= now + _EPSILON:
                ask.append(target)
        return ask, failed

    def ask_helpers(self, target: str, members: list[str], k: int, rng: random.Random) -> list[str]:
        """Pick up to ``k`` of ``members`` (``target`` aside) to probe ``target`` for us; the
        acks of exactly these count. Empty if there is nobody to ask."""
        candidates = [m for m in members if m != target]
        chosen = candidates if len(candidates) <= k else rng.sample(candidates, k)
        pending = self._pending.get(target)
        if pending is not None and chosen:
            pending.asked, pending.helpers = True, tuple(chosen)
        return chosen

    # -- as a helper -----------------------------------------------------------

    def relay(self, requester: str, target: str, now: float) -> bool:
        """Note that ``requester`` asked us to probe ``target``; True if that is new (probe it)."""
        waiting = self._relays.setdefault(target, {})
        new = requester not in waiting
        waiting[requester] = now + self.timeout
        return new

    def relayed(self, target: str, now: float) -> list[str]:
        """``target`` answered us: the requesters still waiting to hear it (forgotten now)."""
        waiting = self._relays.pop(target, {})
        return sorted(r for r, until in waiting.items() if until > now)

    def forget(self, now: float) -> None:
        """Drop relay requests nobody answered in time."""
        for target, waiting in list(self._relays.items()):
            for requester, until in list(waiting.items()):
                if until <= now:
                    del waiting[requester]
            if not waiting:
                del self._relays[target]
