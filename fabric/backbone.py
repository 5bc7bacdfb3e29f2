"""A node's seat on the backbone: its core, its mesh summary, and the view of other meshes.

Gateways and consoles take one (``--cross-mesh backbone``, the default). A gateway publishes
its mesh's summary (``gossip/summary.py``); a console publishes only itself. Every seat can
list the meshes and fetch a mesh's members on demand from one of that mesh's gateways; the
fetched members are cached until the mesh's summary hash moves on::

    node.backbone.meshes()              # every mesh on the backbone, its summary and gateways
    await node.backbone.members("m2")   # m2's members (a Directory of verified entries)
    await node.backbone.entries()       # every other mesh's members, as directory dicts
    node.backbone.known_entries()       # the same from the cache, without waiting (refetches in the background)
    await node.backbone.lookup("m2.broker")

A seat finds the backbone through ``--backbone-peer`` addresses and through the members of
its own mesh whose digest says ``backbone`` (so a mesh's second gateway needs no flag).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from . import rpc
from .crossmesh import GATEWAY_ALPN, LOOKUP_TIMEOUT, Failover, entry_from_raw, target_mesh
from .directory import Change, ChangeKind, Directory, Entry
from .errors import FabricError, ResolveError
from .gossip import digest as digests
from .gossip.backbone import BackboneConfig, BackboneCore
from .gossip.digest import Verifier
from .gossip.members import Member, MemberChange
from .gossip.proto import Peer
from .gossip.summary import SummaryPublisher, entries_hash

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

BACKBONE_TYPES = ("gateway", "console")


@dataclass
class _Cached:
    hash: bytes
    version: int
    members: Directory
    fetched_at: float


class Backbone:
    """One node's seat: create with ``Backbone.create(node, verify)``."""

    def __init__(self, node: "Node", core: BackboneCore, verify: Verifier) -> None:
        self.node = node
        self.core = core
        self.verify = verify
        self.publisher: SummaryPublisher | None = None
        self.failover = Failover()
        self._cache: dict[str, _Cached] = {}
        self._fetching: dict[str, asyncio.Future] = {}
        self._background: set[asyncio.Future] = set()

    @classmethod
    def create(cls, node: "Node", verify: Verifier, rng: random.Random | None = None) -> "Backbone":
        cfg = node.config
        seat: list[Backbone] = []

        def own_record(version: int, leaving: bool) -> digests.SignedDigest:
            publisher = seat[0].publisher if seat else None
            d = digests.Digest(node.node_id, cfg.mesh, cfg.type, tuple(node.transport.addrs),  # type: ignore[union-attr]
                               node.incarnation, version, leaving, publisher.meta() if publisher else {})
            return digests.sign(d, node.identity.sign)  # type: ignore[union-attr]

        core = BackboneCore(node.node_id, own_record, node.identity.sign, verify,  # type: ignore[union-attr]
                            BackboneConfig.like(cfg.gossip), rng or random.Random(), list(cfg.backbone_peer_list))
        self = cls(node, core, verify)
        seat.append(self)
        if cfg.type == "gateway":
            self.publisher = SummaryPublisher(node.directory, cfg.mesh, core.changed,  # type: ignore[arg-type]
                                              lambda: (m.summary.get("sv", 0) for m in self.gateways_of(cfg.mesh)))
        node.directory.subscribe(self._discover)  # type: ignore[union-attr]
        core.table.subscribe(self._forget_stale_connection)
        return self

    # -- the view --------------------------------------------------------------

    def summary_of(self, mesh: str) -> Member | None:
        """The record of ``mesh``'s newest summary: its live gateway with the highest ``sv``."""
        live = [m for m in self.gateways_of(mesh) if not m.suspect]
        return max(live, key=lambda m: (m.summary.get("sv", 0), m.node_id)) if live else None

    def gateways_of(self, mesh: str) -> list[Member]:
        return self.core.members(mesh=mesh, type="gateway")

    def meshes(self) -> list[dict[str, Any]]:
        """Every mesh on the backbone: its newest summary, its gateways and consoles."""
        out, now = [], self.node.clock()
        for mesh in sorted({m.mesh for m in self.core.members()}):
            newest = self.summary_of(mesh)
            summary = newest.summary if newest else {}
            out.append({
                "mesh": mesh, "local": mesh == self.node.config.mesh,
                "summary": {"version": summary.get("sv", 0), "counts": summary.get("n", {}),
                            "hash": summary.get("h", b"").hex(), "from": newest.name} if newest else None,
                "members_cached": self._fresh(mesh) is not None,
                "gateways": [m.as_dict(now) for m in self.gateways_of(mesh)],
                "consoles": [m.as_dict(now) for m in self.core.members(mesh=mesh, type="console")],
            })
        return out

    async def members(self, mesh: str) -> Directory:
        """``mesh``'s members: from the cache while its summary hash holds, else fetched."""
        newest = self.summary_of(mesh)
        if newest is None:
            known = ", ".join(sorted({m.mesh for m in self.core.members(type="gateway")})) or "none yet"
            raise ResolveError(f"mesh {mesh!r} has no live gateway on the backbone (meshes known: {known})")
        cached = self._fresh(mesh)
        if cached is not None:
            return cached.members
        task = self._fetching.get(mesh)
        if task is None:  # one fetch per mesh at a time, however many lookups wait for it
            task = self._fetching[mesh] = asyncio.ensure_future(self._fetch(mesh))
            task.add_done_callback(lambda _t: self._fetching.pop(mesh, None))
        return (await asyncio.shield(task)).members

    async def entries(self) -> list[dict[str, Any]]:
        """Every other mesh's members as ``Entry.as_dict`` (those that cannot be fetched now
        are left out and logged)."""
        out: list[dict[str, Any]] = []
        now = self.node.clock()
        for mesh in sorted({m.mesh for m in self.core.members(type="gateway")} - {self.node.config.mesh}):
            try:
                members = await self.members(mesh)
            except FabricError as exc:
                log.info("backbone: members of %s unavailable: %s", mesh, exc)
                continue
            out += [e.as_dict(now) for e in members.entries()]
        return out

    def known_entries(self) -> list[dict[str, Any]]:
        """``entries()`` without waiting: every other mesh's cached members. A mesh whose summary
        moved on (or that was never fetched) is fetched in the background; its old rows, if
        any, are shown until then. Call it from the event loop's thread."""
        out: list[dict[str, Any]] = []
        now = self.node.clock()
        for mesh in sorted({m.mesh for m in self.core.members(type="gateway")} - {self.node.config.mesh}):
            if self._fresh(mesh) is None and mesh not in self._fetching:
                task = asyncio.ensure_future(self._quietly(self.members(mesh)))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            if (cached := self._cache.get(mesh)) is not None:
                out += [e.as_dict(now) for e in cached.members.entries()]
        return out

    async def lookup(self, target: str) -> Entry:
        """Resolve ``target`` in another mesh: ``<mesh>.<type>``, a full name, or an id prefix
        within the mesh (``<mesh>.<prefix>``, ``<mesh>.<type>.<prefix>``)."""
        mesh = target_mesh(target)
        if mesh is None:
            raise ResolveError(f"{target!r} names no mesh: across meshes use <mesh>.<type>, a full name "
                               "or <mesh>.<id prefix>")
        tracer = self.node.telemetry.tracer  # type: ignore[union-attr]
        with tracer.start_as_current_span(f"lookup {target}", attributes={"resolve.target": target}) as span:
            hit = self._fresh(mesh) is not None
            entry = (await self.members(mesh)).resolve(target)
            span.set_attribute("backbone.cache_hit", hit)
            span.set_attribute("resolve.name", entry.name)
            return entry

    def status(self) -> dict[str, Any]:
        return {"members": len(self.core.table), "mesh_count": len({m.mesh for m in self.core.members()}),
                "version": self.core.version, "cached": sorted(self._cache),
                "summary": {**self.publisher.meta(), "h": self.publisher.hash.hex()} if self.publisher else None}

    # -- serving other seats ---------------------------------------------------

    def own_members(self) -> dict[str, Any]:
        """This gateway's mesh: every member's signed digest, the summary version and hash."""
        entries = self.node.directory.entries(mesh=self.node.config.mesh)  # type: ignore[union-attr]
        return {"mesh": self.node.config.mesh, "sv": self.publisher.version if self.publisher else 0,
                "hash": entries_hash(entries), "digests": [e.signed.raw for e in entries]}

    # -- internals -------------------------------------------------------------

    def _fresh(self, mesh: str) -> _Cached | None:
        """The cached members of ``mesh`` if its newest summary still has their hash."""
        cached, newest = self._cache.get(mesh), self.summary_of(mesh)
        if cached is None or newest is None or cached.hash != newest.summary.get("h"):
            return None
        return cached

    @staticmethod
    async def _quietly(fetch) -> None:  # type: ignore[no-untyped-def]
        try:
            await fetch
        except FabricError as exc:
            log.info("backbone: background fetch failed: %s", exc)

    async def _fetch(self, mesh: str) -> _Cached:
        tracer = self.node.telemetry.tracer  # type: ignore[union-attr]
        gateways = self.gateways_of(mesh)
        last: Exception | None = None
        for gateway in self.failover.order(gateways):
            with tracer.start_as_current_span(f"fetch members {mesh}", kind=SpanKind.CLIENT,
                                              attributes={"peer.name": gateway.name}):
                try:
                    answer = await rpc.call(self.node.transport, gateway.node_id, gateway.digest.addrs,  # type: ignore[arg-type]
                                            GATEWAY_ALPN, "members", {"mesh": mesh}, LOOKUP_TIMEOUT)
                    cached = self._members_from(mesh, answer)
                except FabricError as exc:
                    last = exc
                    self.failover.failed(gateway.node_id)
                    continue
            self._cache[mesh] = cached
            return cached
        raise ResolveError(f"no gateway of {mesh} answered for its members "
                           f"(tried {', '.join(g.name for g in gateways) or 'none'}): {last}")

    def _members_from(self, mesh: str, answer: dict[str, Any]) -> _Cached:
        now = self.node.clock()
        members = Directory(self.node.node_id)
        for raw in answer.get("digests") or []:
            members.apply(entry_from_raw(raw, self.verify, mesh, now).signed, now)
        if entries_hash(members.entries()) != answer.get("hash"):
            raise ResolveError(f"members of {mesh} do not match the hash their gateway sent")
        return _Cached(answer["hash"], int(answer.get("sv", 0)), members, now)

    def _forget_stale_connection(self, change: MemberChange) -> None:
        """Tell the transport what the backbone heard of a member, as a node does of its own
        mesh's peers (``Node._on_change``): kept, a restarted member's old connection would take
        the next probe, unanswered, and make the member suspect again right after it came back."""
        if self.node.transport is not None:
            self.node.transport.peer_changed(change.member.node_id, change.member.digest.incarnation, change.kind)

    def _discover(self, change: Change) -> None:
        """Members of our mesh on the backbone are bootstrap peers of our seat."""
        entry = change.entry
        if (change.kind not in (ChangeKind.JOINED, ChangeKind.CHANGED) or entry.mesh != self.node.config.mesh
                or entry.node_id == self.node.node_id or not entry.digest.meta.get("backbone")):
            return
        peers = [p for p in self.core.bootstrap if p.node_id != entry.node_id]
        self.core.bootstrap[:] = [*peers, Peer(entry.node_id, entry.addrs)]
