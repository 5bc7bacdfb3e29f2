"""The backbone's member table: every gateway and console on the backbone, plain state.

A member is known by its latest signed record (a ``Digest`` whose heartbeat is a version that
moves only when the record changes). It is *alive*, or *suspect* until a deadline (someone's
probe went unanswered), after which it is removed and buried: a tombstone refuses its record
at that version or older for ``tombstone_ttl`` seconds, so only a refutation (a newer record)
brings it back. Listeners hear of every change, as a directory's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import blake3

from ..directory import ChangeKind, Entry, State
from .digest import SignedDigest

ALIVE, SUSPECT, DEAD = 0, 1, 2
"""Status codes in a state vector."""

VectorEntry = tuple[bytes, int, int, int]
"""``(node id bytes, incarnation, version, status)``: one member as a state vector lists it."""


@dataclass
class Member(Entry):
    """One backbone member: a directory entry whose heartbeat is a version, and, while it is
    suspected, when it will be removed."""

    suspect_until: float | None = None

    @property
    def version(self) -> tuple[int, int]:
        return self.digest.version

    @property
    def suspect(self) -> bool:
        return self.suspect_until is not None

    @property
    def summary(self) -> dict[str, Any]:
        """The mesh summary a gateway publishes (``sv``, ``n``, ``h``); empty for a console."""
        return self.digest.meta

    def as_dict(self, now: float) -> dict[str, Any]:
        """``Entry.as_dict`` with the summary's hash in hex (JSON-safe)."""
        summary = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in self.summary.items()}
        return {**super().as_dict(now), "meta": summary, "version": self.digest.heartbeat}


@dataclass(frozen=True)
class MemberChange:
    kind: ChangeKind
    member: Member


class MemberTable:
    """Members by node id (this node's own record included), tombstones, listeners."""

    def __init__(self, self_id: str, tombstone_ttl: float = 60.0) -> None:
        self.self_id = self_id
        self.tombstone_ttl = tombstone_ttl
        self._members: dict[str, Member] = {}
        self._tombs: dict[str, tuple[tuple[int, int], float]] = {}  # id -> (version, forget at)
        self._listeners: list[Callable[[MemberChange], None]] = []
        self._hash: bytes | None = None
        self._others: list[Member] | None = None

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def get(self, node_id: str) -> Member | None:
        return self._members.get(node_id)

    def tombstone(self, node_id: str) -> tuple[int, int] | None:
        tomb = self._tombs.get(node_id)
        return tomb[0] if tomb else None

    def others(self) -> list[Member]:
        """Every member but this node, alive or suspect (kept until the next change)."""
        if self._others is None:
            self._others = [m for m in self._members.values() if m.node_id != self.self_id]
        return self._others

    def subscribe(self, listener: Callable[[MemberChange], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- changes ---------------------------------------------------------------

    def apply(self, signed: SignedDigest, now: float) -> ChangeKind | None:
        """Take a verified record; the change it made, or ``None`` if it was not newer."""
        d = signed.digest
        tomb = self.tombstone(d.node_id)
        current = self._members.get(d.node_id)
        if (tomb is not None and d.version <= tomb) or (current is not None and d.version <= current.version):
            return None
        if d.leaving:
            if current is not None:
                self._remove(current, ChangeKind.LEFT, now, (d.incarnation, 2**63))
            else:
                self._bury(d.node_id, (d.incarnation, 2**63), now)
            return ChangeKind.LEFT
        self._tombs.pop(d.node_id, None)
        self._invalidate()
        if current is None:
            member = self._members[d.node_id] = Member(signed, now)
            return self._emit(ChangeKind.JOINED, member)
        old, was_suspect = current.digest, current.suspect
        current.signed, current.last_heard, current.state, current.suspect_until = signed, now, State.ALIVE, None
        if (old.addrs, old.meta, old.incarnation, old.mesh, old.type) != (d.addrs, d.meta, d.incarnation, d.mesh, d.type):
            return self._emit(ChangeKind.CHANGED, current)
        return self._emit(ChangeKind.RECOVERED, current) if was_suspect else ChangeKind.HEARTBEAT

    def suspect(self, node_id: str, version: tuple[int, int], until: float) -> bool:
        """Suspect ``node_id`` at ``version`` until ``until``; False if that is old news."""
        member = self._members.get(node_id)
        if member is None or node_id == self.self_id or member.suspect or member.version > version:
            return False
        member.suspect_until, member.state = until, State.SUSPECT
        self._emit(ChangeKind.SUSPECT, member)
        return True

    def expire(self, now: float) -> list[Member]:
        """Remove the suspects whose deadline passed; forget old tombstones."""
        removed = [m for m in self._members.values() if m.suspect_until is not None and m.suspect_until <= now]
        for member in removed:
            self._remove(member, ChangeKind.REMOVED, now, member.version)
        for node_id, (_, until) in list(self._tombs.items()):
            if until <= now:
                del self._tombs[node_id]
        return removed

    # -- summaries of the whole table -------------------------------------------

    def state_hash(self) -> bytes:
        """16 bytes that are equal on two members exactly when they hold the same records."""
        if self._hash is None:
            h = blake3.blake3()
            for node_id in sorted(self._members):
                inc, ver = self._members[node_id].version
                h.update(bytes.fromhex(node_id) + inc.to_bytes(8, "big") + ver.to_bytes(8, "big"))
            self._hash = h.digest(16)
        return self._hash

    def vector(self) -> list[VectorEntry]:
        """Every member and tombstone with its version and status: what a peer compares."""
        out = [(bytes.fromhex(m.node_id), *m.version, SUSPECT if m.suspect else ALIVE)
               for m in self._members.values()]
        out += [(bytes.fromhex(node_id), *version, DEAD) for node_id, (version, _) in self._tombs.items()]
        return out

    # -- internals -------------------------------------------------------------

    def _remove(self, member: Member, kind: ChangeKind, now: float, version: tuple[int, int]) -> None:
        del self._members[member.node_id]
        self._invalidate()
        self._bury(member.node_id, version, now)
        self._emit(kind, member)

    def _bury(self, node_id: str, version: tuple[int, int], now: float) -> None:
        self._tombs[node_id] = (version, now + self.tombstone_ttl)

    def _invalidate(self) -> None:
        self._hash = None
        self._others = None

    def _emit(self, kind: ChangeKind, member: Member) -> ChangeKind:
        for listener in list(self._listeners):
            listener(MemberChange(kind, member))
        return kind
