"""Cross-mesh resolution on demand, through the control plane. The produce path stays direct.

A node that cannot find ``mesh2.broker`` in its own directory asks a gateway of its mesh
(``lookup`` on ``meshfabric/gateway/1``); that gateway answers from its cache of mesh2's
members, or fetches them from one of mesh2's gateways (``members``) first::

    writer ──lookup──▶ mesh1 gateway ──members (on a cache miss)──▶ mesh2 gateway
       └──────────────── produce, directly ────────────────▶ mesh2 broker

Answers are the members' own signed digests, verified by whoever uses them, so a gateway can
misdirect nobody to an address its owner did not sign. With several gateways a caller tries
them in random order, those that failed lately last, until one answers.
"""

from __future__ import annotations

import math
import os
import random
import time
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

from . import rpc
from .directory import Entry
from .errors import RemoteError, ResolveError, TransportError
from .gossip import digest as digests
from .gossip.digest import Verifier
from .identity import is_mesh_label

if TYPE_CHECKING:
    from .node import Node

GATEWAY_ALPN = b"meshfabric/gateway/1"
LOOKUP_TIMEOUT = 2.0
PENALTY_S = 5.0

T = TypeVar("T")


def target_mesh(target: str) -> str | None:
    """The mesh a ``<mesh>.<type>[.<hex>]`` or ``<mesh>.<id prefix>`` target names; ``None``
    for a bare id prefix (which names no mesh)."""
    head, dot, _ = target.partition(".")
    return head if dot and is_mesh_label(head) else None


def entry_from_raw(raw: Any, verify: Verifier, mesh: str, now: float) -> Entry:
    """A directory entry from a member's signed digest, checked: signature and mesh."""
    if not isinstance(raw, bytes):
        raise ResolveError("a lookup answer must carry the member's signed digest as bytes")
    signed = digests.decode(raw, verify)
    if signed.digest.mesh != mesh:
        raise ResolveError(f"asked for a member of {mesh!r}, got {signed.digest.name}")
    return Entry(signed, now)


class Failover:
    """The order to try equivalent peers in: random, those that failed lately last."""

    def __init__(self, penalty: float = PENALTY_S, rng: random.Random | None = None) -> None:
        self.penalty = penalty
        # Seeded from 16 bytes: ``random.Random()`` reads ~2.5 kB of urandom (~12 µs of a boot).
        self.rng = rng or random.Random(int.from_bytes(os.urandom(16), "big"))
        self._failed: dict[str, float] = {}

    def order(self, peers: Sequence[T]) -> list[T]:
        """``peers`` (anything with a ``node_id``) shuffled, the recently failed ones last."""
        now = time.monotonic()
        shuffled = list(peers)
        self.rng.shuffle(shuffled)
        return sorted(shuffled, key=lambda p: now - self._failed.get(p.node_id, -math.inf) < self.penalty)  # type: ignore[attr-defined]

    def failed(self, node_id: str) -> None:
        self._failed[node_id] = time.monotonic()


class CrossMesh:
    """A node's way to other meshes: its own backbone seat if it has one, else its gateways."""

    def __init__(self, node: "Node", verify: Verifier) -> None:
        self.node = node
        self.verify = verify
        self.failover = Failover()

    async def resolve(self, target: str, not_found: ResolveError) -> Entry:
        """Resolve ``target`` in another mesh; re-raise ``not_found`` if it names none."""
        mesh = target_mesh(target)
        if mesh is None or mesh == self.node.config.mesh:
            raise not_found
        if self.node.backbone is not None:
            return await self.node.backbone.lookup(target)
        own = self.node.config.mesh
        gateways = [e for e in self.node.directory.entries(mesh=own, type="gateway", alive_only=True)  # type: ignore[union-attr]
                    if e.digest.meta.get("backbone") and e.node_id != self.node.node_id]
        if not gateways:
            raise not_found
        last: Exception | None = None
        for gateway in self.failover.order(gateways):
            try:
                answer = await rpc.call(self.node.transport, gateway.node_id, gateway.addrs, GATEWAY_ALPN,  # type: ignore[arg-type]
                                        "lookup", {"target": target}, LOOKUP_TIMEOUT)
            except RemoteError as exc:
                if exc.code == "unknown_target":
                    raise ResolveError(str(exc)) from None
                last = exc
            except TransportError as exc:
                last = exc
            else:
                return entry_from_raw(answer.get("digest"), self.verify, mesh, self.node.clock())
            self.failover.failed(gateway.node_id)
        raise ResolveError(f"no gateway of {own} answered a lookup of {target!r} "
                           f"(tried {', '.join(g.name for g in gateways)}): {last}")
