"""The simulator's parts: message sizes, keys, and the simulated nodes and network.

Split out of ``sim.py`` (which re-exports all of it); see there for how they are driven.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Protocol

import iroh

from ..directory import Directory
from ..frames import Frame, Kind, encode
from ..identity import Identity
from .backbone import BackboneCore
from .backbone_wire import WIRE as BACKBONE_WIRE
from .digest import Signer
from .proto import GossipCore, Message, Pull, PullReply, Push

_FRAME_KIND = {Push: Kind.GOSSIP_PUSH, Pull: Kind.GOSSIP_PULL, PullReply: Kind.GOSSIP_PULL_REPLY}


def frame_size(message: Message) -> int:
    """Bytes of ``message`` as the one frame it travels as."""
    kind = _FRAME_KIND.get(type(message))
    if kind is None:
        return len(encode(BACKBONE_WIRE.encode(message)))  # type: ignore[arg-type]
    return len(encode(Frame(kind, {"topic": message.topic, "digests": list(message.digests)})))


# -- keys ------------------------------------------------------------------------------------


class Keys(Protocol):
    """Where node ids and signatures come from."""

    def new(self, rng: random.Random) -> tuple[str, Signer]: ...

    def verify(self, node_id: str, message: bytes, signature: bytes) -> bool: ...


class FakeKeys:
    """Cheap deterministic stand-in for ed25519: ``sig = sha512(node_id + body)``.

    Not secure (anyone can compute it), but a digest signed for another id fails to verify,
    which is what the protocol's checks need; ids come from the simulation's rng.
    """

    def new(self, rng: random.Random) -> tuple[str, Signer]:
        node_id = rng.randbytes(32).hex()
        return node_id, partial(self._sign, node_id)

    @staticmethod
    def _sign(node_id: str, body: bytes) -> bytes:
        return hashlib.sha512(node_id.encode() + body).digest()

    def verify(self, node_id: str, message: bytes, signature: bytes) -> bool:
        return signature == self._sign(node_id, message)


class IrohKeys:
    """Real ed25519 keys through the iroh bindings (~0.1-0.2 ms a verify; ids are random)."""

    def new(self, rng: random.Random) -> tuple[str, Signer]:
        identity = Identity.generate()
        return identity.node_id, identity.sign

    def verify(self, node_id: str, message: bytes, signature: bytes) -> bool:
        try:
            iroh.EndpointId.from_string(node_id).verify(message, iroh.Signature.from_bytes(signature))
        except iroh.IrohError:
            return False
        return True


# -- nodes and network -----------------------------------------------------------------------


@dataclass(frozen=True)
class NetConfig:
    """The simulated network: one-way latency in seconds, fixed or a uniform ``(lo, hi)``
    range, and the probability that a message (or a pull reply) is lost."""

    latency: float | tuple[float, float] = (0.01, 0.05)
    loss: float = 0.0


class NodeState(str, Enum):
    UP = "up"
    PAUSED = "paused"  # neither ticks nor receives (messages to it are dropped); can resume
    DEAD = "dead"      # killed: never comes back
    LEFT = "left"      # announced a clean leave, then stopped


@dataclass(eq=False)
class SimNode:
    """Node ``index`` of ``mesh``: its member core, its watcher cores and its counters."""

    index: int
    mesh: str
    node_id: str
    name: str
    signer: Signer  # signs with this node's key: digests for it, or forgeries by it
    directory: Directory
    core: GossipCore
    phase: float
    watchers: dict[str, GossipCore] = field(default_factory=dict)  # watched mesh -> core
    backbone: BackboneCore | None = None
    state: NodeState = NodeState.UP
    sent_messages: int = 0
    sent_bytes: int = 0
    max_sends_per_tick: int = 0
    # topic -> [messages out, bytes out, messages in, bytes in]
    traffic: dict[bytes, list[int]] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.state is NodeState.UP

    def cores(self) -> list[GossipCore | BackboneCore]:
        return [self.core, *self.watchers.values(), *([self.backbone] if self.backbone else [])]

    def count(self, topic: bytes, size: int, out: bool) -> None:
        row = self.traffic.setdefault(topic, [0, 0, 0, 0])
        row[0 if out else 2] += 1
        row[1 if out else 3] += size

    def known(self, mesh: str | None = None) -> set[str]:
        """Ids this node's directory holds for ``mesh`` (its own mesh by default)."""
        mesh = mesh or self.mesh
        return {e.node_id for e in self.directory if e.mesh == mesh}

    def __repr__(self) -> str:
        return f"SimNode({self.mesh}[{self.index}] {self.name} {self.state.value})"


@dataclass(frozen=True)
class Traffic:
    """Messages and bytes sent by ``nodes`` live nodes over ``rounds`` rounds."""

    nodes: int
    rounds: float
    messages: int
    bytes: int

    @property
    def msgs_per_node_per_round(self) -> float:
        return self.messages / max(1, self.nodes) / max(self.rounds, 1e-9)

    @property
    def bytes_per_node_per_round(self) -> float:
        return self.bytes / max(1, self.nodes) / max(self.rounds, 1e-9)


NodeRef = SimNode | str  # a node, or its id
