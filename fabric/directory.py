"""The topology directory: every node a process knows of, built from gossip digests.

Name → {mesh, type, addresses, node id, last heard, state}. Failure detection lives here too:
an entry whose heartbeat stops moving turns *suspect*, then is removed; a node that leaves
cleanly is removed at once. The directory is plain state, fed by the gossip core and asked by
services ("where do I send to reach mesh2.broker?"); it does no I/O and takes ``now`` as an
argument so it can run on simulated time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterator

from .errors import ResolveError
from .gossip.digest import Digest, SignedDigest


class State(str, Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"


class ChangeKind(str, Enum):
    JOINED = "joined"
    CHANGED = "changed"      # addresses or metadata moved, or a new incarnation
    SUSPECT = "suspect"
    RECOVERED = "recovered"  # a suspect whose heartbeat moved again
    REMOVED = "removed"      # failure detection gave up on it
    LEFT = "left"            # it announced its leave
    HEARTBEAT = "heartbeat"  # only the heartbeat moved: news for gossip, not told to listeners


GONE = frozenset((ChangeKind.REMOVED, ChangeKind.LEFT))  # changes after which a peer is no longer listed


@dataclass
class Entry:
    """One known node."""

    signed: SignedDigest
    last_heard: float
    state: State = State.ALIVE

    @property
    def digest(self) -> Digest:
        return self.signed.digest

    @property
    def name(self) -> str:
        return self.digest.name

    @property
    def node_id(self) -> str:
        return self.digest.node_id

    @property
    def mesh(self) -> str:
        return self.digest.mesh

    @property
    def type(self) -> str:
        return self.digest.type

    @property
    def addrs(self) -> tuple[str, ...]:
        return self.digest.addrs

    def as_dict(self, now: float) -> dict:
        """A plain-value view, for the control socket and the console."""
        d = self.digest
        return {
            "name": d.name, "mesh": d.mesh, "type": d.type, "node_id": d.node_id,
            "id_prefix": d.node_id[:6], "addrs": list(d.addrs), "state": self.state.value,
            "last_heard_s": round(max(0.0, now - self.last_heard), 3),
            "incarnation": d.incarnation, "heartbeat": d.heartbeat, "meta": d.meta,
        }


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    entry: Entry


Listener = Callable[[Change], None]


class Directory:
    """Entries keyed by node id, with lookups by name, ``<mesh>.<type>`` and id prefix."""

    def __init__(self, self_id: str, suspect_after: float = 1.5, remove_after: float = 3.0,
                 tombstone_ttl: float = 60.0) -> None:
        if not 0 < suspect_after <= remove_after:
            raise ValueError("need 0 < suspect_after <= remove_after")
        self.self_id = self_id
        self.suspect_after = suspect_after
        self.remove_after = remove_after
        self.tombstone_ttl = tombstone_ttl
        self._entries: dict[str, Entry] = {}
        # node id -> (version that may no longer be applied, when to forget it)
        self._tombstones: dict[str, tuple[tuple[int, int], float]] = {}
        self._listeners: list[Listener] = []
        # Gossip asks these on every tick and every piece of news, so they are kept, not
        # recomputed: members per mesh, and sorted ``entries()`` answers until the next
        # join, removal, state or name change (a heartbeat changes none of them).
        self._counts: dict[str, int] = {}
        self._sorted: dict[tuple[str | None, str | None, bool], list[Entry]] = {}
        # name -> the node ids of that name, first known first (6 hex of an id can collide):
        # every produce resolves its broker by name, in O(1) however large the directory
        self._named: dict[str, list[str]] = {}

    # -- feeding ---------------------------------------------------------------

    def apply(self, signed: SignedDigest, now: float) -> Change | None:
        """Take a verified digest; return the change it made, or ``None`` if it was old news.

        A digest is news when its version is newer than the one held (or than the tombstone
        of a node that left or was removed).
        """
        d = signed.digest
        tomb = self._tombstones.get(d.node_id)
        if tomb is not None and d.version <= tomb[0]:
            return None
        current = self._entries.get(d.node_id)
        if current is not None and d.version <= current.digest.version:
            return None
        if d.leaving:
            if current is None:
                self._bury(d.node_id, (d.incarnation, 2**63), now)
                return None
            return self._remove(current, ChangeKind.LEFT, (d.incarnation, 2**63), now)
        self._tombstones.pop(d.node_id, None)
        if current is None:
            entry = Entry(signed, now)
            self._entries[d.node_id] = entry
            self._named.setdefault(d.name, []).append(d.node_id)
            self._counts[d.mesh] = self._counts.get(d.mesh, 0) + 1
            self._sorted.clear()
            return self._emit(ChangeKind.JOINED, entry)
        old = current.digest
        was_suspect = current.state is State.SUSPECT
        moved = (old.mesh, old.type) != (d.mesh, d.type)  # restarted as another type or in another mesh
        if moved:
            self._unname(old.name, d.node_id)
            self._named.setdefault(d.name, []).append(d.node_id)
        if was_suspect or moved:
            self._sorted.clear()
            self._counts[old.mesh] -= 1
            self._counts[d.mesh] = self._counts.get(d.mesh, 0) + 1
        current.signed, current.last_heard, current.state = signed, now, State.ALIVE
        if (old.addrs, old.meta, old.incarnation) != (d.addrs, d.meta, d.incarnation):
            return self._emit(ChangeKind.CHANGED, current)
        if was_suspect:
            return self._emit(ChangeKind.RECOVERED, current)
        return Change(ChangeKind.HEARTBEAT, current)  # news worth forwarding, not an event

    def expire(self, now: float) -> list[Change]:
        """Mark silent entries suspect and remove those silent for too long."""
        changes: list[Change] = []
        for node_id, entry in list(self._entries.items()):
            silent = now - entry.last_heard
            if silent < self.suspect_after or node_id == self.self_id:
                continue  # the common case, decided without touching the digest
            if silent >= self.remove_after:
                changes.append(self._remove(entry, ChangeKind.REMOVED, entry.digest.version, now))
            elif entry.state is State.ALIVE:
                entry.state = State.SUSPECT
                self._sorted.clear()
                changes.append(self._emit(ChangeKind.SUSPECT, entry))
        for node_id, (_, until) in list(self._tombstones.items()):
            if until <= now:
                del self._tombstones[node_id]
        return changes

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- asking ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def get(self, node_id: str) -> Entry | None:
        return self._entries.get(node_id)

    def down(self, node_id: str) -> str | None:
        """Why ``node_id`` is believed down ("suspected down", "gone from the directory"), or
        ``None`` if it is alive here or this directory never held it."""
        entry = self._entries.get(node_id)
        if entry is not None:
            return "suspected down" if entry.state is State.SUSPECT else None
        return "gone from the directory" if node_id in self._tombstones else None

    def count(self, mesh: str | None = None) -> int:
        """How many entries there are (of ``mesh``), in O(1)."""
        return len(self._entries) if mesh is None else self._counts.get(mesh, 0)

    def entries(self, mesh: str | None = None, type: str | None = None,
                alive_only: bool = False) -> list[Entry]:
        """Entries sorted by name, optionally of one mesh and/or type."""
        return list(self._listed(mesh, type, alive_only))

    def _listed(self, mesh: str | None, type: str | None, alive_only: bool) -> list[Entry]:
        """``entries()``'s answer as kept (not to be changed: callers outside get a copy)."""
        key = (mesh, type, alive_only)
        cached = self._sorted.get(key)
        if cached is None:
            found = [e for e in self._entries.values()
                     if (mesh is None or e.mesh == mesh) and (type is None or e.type == type)
                     and (not alive_only or e.state is State.ALIVE)]
            cached = self._sorted[key] = sorted(found, key=lambda e: e.name)
        return cached

    def resolve(self, target: str, rng: random.Random | None = None) -> Entry:
        """Find a live node by exact name, by ``<mesh>.<type>`` (any live one), or by id prefix
        (4+ hex), alone or within a mesh (and type): ``<mesh>.<prefix>``, ``<mesh>.<type>.<prefix>``.

        Raises ``ResolveError`` naming what is known when nothing matches.
        """
        named = self._named.get(target)
        if named:
            return self._entries[named[0]]
        parts = target.split(".")
        if len(parts) == 2:
            candidates = self._listed(parts[0], parts[1], alive_only=True)
            if candidates:
                return (rng or random).choice(candidates)
        prefix, scope = parts[-1].lower(), parts[:-1]
        if len(prefix) >= 4 and (not scope or (len(scope) <= 2 and _is_hex(prefix))):
            mesh, type = (*scope, None, None)[:2]
            matches = [e for e in self._entries.values() if e.node_id.startswith(prefix)
                       and mesh in (None, e.mesh) and type in (None, e.type)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ResolveError(f"id prefix {target!r} is ambiguous: {sorted(e.name for e in matches)}")
        known = ", ".join(e.name for e in self.entries()) or "nothing yet"
        raise ResolveError(
            f"no live node answers to {target!r}; use a full name, <mesh>.<type>, an id prefix of "
            f"4+ hex, or one within a mesh (<mesh>.<prefix>, <mesh>.<type>.<prefix>). Known: {known}"
        )

    # -- internals -------------------------------------------------------------

    def _remove(self, entry: Entry, kind: ChangeKind, version: tuple[int, int], now: float) -> Change:
        del self._entries[entry.node_id]
        self._unname(entry.name, entry.node_id)
        self._counts[entry.mesh] -= 1
        self._sorted.clear()
        self._bury(entry.node_id, version, now)
        return self._emit(kind, entry)

    def _unname(self, name: str, node_id: str) -> None:
        same_name = self._named[name]
        same_name.remove(node_id)
        if not same_name:
            del self._named[name]

    def _bury(self, node_id: str, version: tuple[int, int], now: float) -> None:
        self._tombstones[node_id] = (version, now + self.tombstone_ttl)

    def _emit(self, kind: ChangeKind, entry: Entry) -> Change:
        change = Change(kind, entry)
        for listener in list(self._listeners):
            listener(change)
        return change


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
