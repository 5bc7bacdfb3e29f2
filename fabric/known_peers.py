"""The mesh peers a node last held, kept in its data dir, so that a restart rejoins through them.

A node started without ``--bootstrap`` (a mesh's seed) knew nobody after a restart: its peers
kept the old process's entry until they removed it and pulled their bootstrap peer again
(~2.3-2.8 s with the harness's gossip timings), and meanwhile it served a mesh of one. Now a
node writes the addresses of up to ``MAX_PEERS`` members of its mesh to ``peers.json`` (at
most once every ``SAVE_DELAY`` seconds, when membership changed) and, at its next boot, pulls
each of them once with its first pull: its digest reaches them at once.

They are hints, not bootstrap peers: pulled once, never again, so peers that are gone for good
cost one failed pull. A missing, unreadable or foreign file (another mesh's) is ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from .address import parse_peer
from .directory import Change, ChangeKind, Directory
from .errors import ConfigError
from .gossip.proto import Peer

log = logging.getLogger(__name__)

FILE_NAME = "peers.json"
MAX_PEERS = 8
SAVE_DELAY = 1.0
MEMBERSHIP = frozenset({ChangeKind.JOINED, ChangeKind.CHANGED, ChangeKind.LEFT, ChangeKind.REMOVED})


def load(data_dir: Path, mesh: str) -> list[Peer]:
    """The peers saved in ``data_dir`` for ``mesh`` (empty if none, or unusable: logged)."""
    path = data_dir / FILE_NAME
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict) or not isinstance(saved.get("peers"), list):
            raise ValueError("not {mesh, peers: [...]}")
        if saved.get("mesh") != mesh:
            log.info("known peers in %s are of mesh %r, not %r: not used", path, saved.get("mesh"), mesh)
            return []
        return [parse_peer(p) for p in saved["peers"][:MAX_PEERS] if isinstance(p, str)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, ConfigError) as exc:
        log.warning("ignoring the known peers in %s: %s", path, exc)
        return []


class KnownPeers:
    """Saves the mesh members of ``directory`` (but its own node) to ``data_dir`` as they change."""

    def __init__(self, data_dir: Path, mesh: str, directory: Directory) -> None:
        self.path = data_dir / FILE_NAME
        self.mesh = mesh
        self.directory = directory
        self._pending: asyncio.TimerHandle | None = None
        self._unsubscribe = directory.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.kind not in MEMBERSHIP or change.entry.mesh != self.mesh or self._pending is not None:
            return
        try:
            self._pending = asyncio.get_running_loop().call_later(SAVE_DELAY, self.save)
        except RuntimeError:  # no loop (a directory driven by hand): save now
            self.save()

    def peers(self) -> list[str]:
        """Up to ``MAX_PEERS`` members, the most recently heard first, as ``id@addr,...``."""
        members = [e for e in self.directory.entries(mesh=self.mesh) if e.node_id != self.directory.self_id and e.addrs]
        members.sort(key=lambda e: e.last_heard, reverse=True)
        return [f"{e.node_id}@{','.join(e.addrs)}" for e in members[:MAX_PEERS]]

    def save(self) -> None:
        """Write the file now (atomically). A mesh emptied by a partition keeps the last list."""
        self._pending = None
        peers = self.peers()
        if not peers:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"mesh": self.mesh, "peers": peers}))
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk must not stop the node: the file is only a hint
            log.warning("could not save the known peers to %s: %s", self.path, exc)

    def close(self) -> None:
        """Stop following the directory (a pending save is dropped)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._unsubscribe()
