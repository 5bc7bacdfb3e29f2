"""A gateway's compact, versioned summary of its mesh, kept current from the directory.

The summary is what a gateway's backbone record carries (``meta``)::

    {"sv": 7, "n": {"broker": 3, "gateway": 2, ...}, "h": <16 bytes>}

``h`` hashes the members' (node id, type, addresses), so two gateways that see the same
mesh publish the same hash, and a cache of the members' details stays valid while it does
not move. ``sv`` is a Lamport-style version: a gateway whose hash moves takes one more than
the highest ``sv`` it knows among its mesh's gateways, so the newest summary of a mesh is the
one with the highest ``sv``. Heartbeats and suspicions change nothing; joins, removals,
leaves and address changes do.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import blake3

from ..directory import Change, ChangeKind, Directory, Entry

MEMBERSHIP_CHANGES = (ChangeKind.JOINED, ChangeKind.CHANGED, ChangeKind.REMOVED, ChangeKind.LEFT)


def members_hash(members: Iterable[tuple[str, str, Iterable[str]]]) -> bytes:
    """16 bytes over sorted ``(node id, type, addresses)``."""
    h = blake3.blake3()
    for node_id, type, addrs in sorted((i, t, tuple(a)) for i, t, a in members):
        h.update(f"{node_id}|{type}|{','.join(addrs)}\n".encode())
    return h.digest(16)


def entries_hash(entries: Iterable[Entry]) -> bytes:
    return members_hash((e.node_id, e.type, e.addrs) for e in entries)


class SummaryPublisher:
    """Watches one mesh in ``directory``; calls ``on_change()`` when its summary moved.

    ``peer_versions()`` gives the ``sv`` of the mesh's other gateways as the backbone knows them.
    """

    def __init__(self, directory: Directory, mesh: str, on_change: Callable[[], None],
                 peer_versions: Callable[[], Iterable[int]] = lambda: ()) -> None:
        self.directory = directory
        self.mesh = mesh
        self.on_change = on_change
        self.peer_versions = peer_versions
        self.version = 0
        self.counts: dict[str, int] = {}
        self.hash = b""
        self.refresh()
        directory.subscribe(self._on_directory_change)

    def meta(self) -> dict[str, Any]:
        return {"sv": self.version, "n": dict(self.counts), "h": self.hash}

    def refresh(self) -> bool:
        """Recompute; bump the version (and return True) if the membership moved."""
        entries = self.directory.entries(mesh=self.mesh)
        digest = entries_hash(entries)
        if digest == self.hash:
            return False
        counts: dict[str, int] = {}
        for e in entries:
            counts[e.type] = counts.get(e.type, 0) + 1
        self.hash, self.counts = digest, counts
        self.version = max([self.version, *self.peer_versions()]) + 1
        return True

    def _on_directory_change(self, change: Change) -> None:
        if change.kind in MEMBERSHIP_CHANGES and change.entry.mesh == self.mesh and self.refresh():
            self.on_change()
