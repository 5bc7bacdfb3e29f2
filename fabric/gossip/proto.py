"""The gossip protocol core: a state machine with no I/O.

Feed it what peers sent (``handle``) and the passing of time (``tick``); it returns the
messages to send. The adapter in ``net.py`` carries them over iroh, the simulator in
``sim.py`` over a simulated network, so the same logic is tested at 500+ nodes without sockets.

How it spreads state (rumor mongering plus anti-entropy, as in epidemic broadcast):

* Every ``heartbeat_interval`` a member signs a fresh digest of itself (heartbeat + 1).
* A digest that is news (newer than what the directory holds) becomes a *rumor*: for
  ``rumor_rounds`` ticks it is pushed, batched with the other rumors, to ``fanout`` random
  live members. Fan-out per tick is fixed, so it does not grow with the mesh; a rumor reaches
  every node in O(log N) rounds.
* Every ``pull_interval`` a node pulls the full state of one random member, repairing
  whatever the rumors missed (a state over ``max_digests_per_message`` is sent as a random
  sample of that many); a joining node pulls from its bootstrap peers at once, and a member
  also pulls one bootstrap peer it does not hold, so the sides of a healed partition rejoin.
  A member that holds no live peer (cut off, or alone) pulls its bootstrap peers every
  heartbeat instead, so a node isolated long enough to drop everyone rejoins soon after the
  cut heals.
* Messages are deduplicated by id (blake3 of the signed bytes) before any signature check.

A *watcher* core follows a mesh it is not a member of (the seed's interim cross-mesh design):
it never pushes and is never pushed to; it pulls a member's full state every heartbeat, and
every tick while the mesh is settling (for ``settle_window`` after a pull brought a member it
did not list, or a change of one: a cluster coming up, a node restarted). Those
pulls are all it hears of the mesh, so pulls skip a member that left one unanswered until it
answers or is suspected (a killed member stays "alive" until suspected: drawing it twice in a
row starved watchers into dropping the whole mesh), and a watcher that has lost every member
pulls one it knew besides its bootstrap peers (which may be the very node that died).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Union

import blake3

from ..directory import ChangeKind, Directory, Entry
from ..errors import DigestError, ForgedDigest
from . import digest as digests
from .digest import SignedDigest, Verifier
from .rumors import RumorQueue, SeenIds


def mesh_topic(mesh: str) -> bytes:
    """The gossip topic of a mesh: ``blake3(mesh_id)``."""
    return blake3.blake3(mesh.encode()).digest()


@dataclass(frozen=True)
class GossipConfig:
    """Timings (seconds) and bounds of the protocol. Defaults remove a silent node after 2.5 s."""

    fanout: int = 3
    tick_interval: float = 0.2
    heartbeat_interval: float = 0.5
    suspect_after: float = 1.5
    remove_after: float = 2.5
    pull_interval: float = 2.0
    rumor_rounds: int | None = None  # None: ceil(log2(members + 1)) + 2
    max_digests_per_message: int = 256
    seen_ttl: float = 30.0
    settle_window: float = 1.0  # a watcher pulls every tick for this long after membership news

    def __post_init__(self) -> None:
        if self.fanout < 1 or self.tick_interval <= 0 or self.heartbeat_interval <= 0:
            raise ValueError("fanout, tick_interval and heartbeat_interval must be positive")
        if not 0 < self.suspect_after <= self.remove_after:
            raise ValueError("need 0 < suspect_after <= remove_after")


@dataclass(frozen=True)
class Peer:
    """Where to send: a node id and the addresses it announced."""

    node_id: str
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Push:
    """Rumors: digests the sender found to be news."""

    topic: bytes
    digests: tuple[bytes, ...]


@dataclass(frozen=True)
class Pull:
    """Ask for the receiver's full state of the topic; carries the sender's own digest
    (empty for a watcher) so a bootstrap peer learns of a joining node at once."""

    topic: bytes
    digests: tuple[bytes, ...]


@dataclass(frozen=True)
class PullReply:
    """The full state of a topic: the latest digest of every known member."""

    topic: bytes
    digests: tuple[bytes, ...]


Message = Union[Push, Pull, PullReply]


@dataclass(frozen=True)
class Send:
    to: Peer
    message: Message


@dataclass
class GossipCore:
    """One node's view of one mesh topic (as a member, or as a watcher).

    ``own_digest(heartbeat, leaving)`` signs this node's digest; it is ``None`` for a watcher.
    The member core of a node also runs the directory's failure detection.
    """

    mesh: str
    self_id: str
    directory: Directory
    verify: Verifier
    config: GossipConfig = field(default_factory=GossipConfig)
    own_digest: Callable[[int, bool], SignedDigest] | None = None
    rng: random.Random = field(default_factory=random.Random)
    bootstrap: list[Peer] = field(default_factory=list)
    hints: list[Peer] = field(default_factory=list)  # pulled once, with the first pull (known_peers.py)

    def __post_init__(self) -> None:
        self.topic = mesh_topic(self.mesh)
        self.stats: Counter[str] = Counter()
        self.heartbeat = 0
        self._rumors = RumorQueue(self._rounds, self.config.max_digests_per_message)
        self._seen = SeenIds(self.config.seen_ttl)
        self._next_heartbeat = -math.inf
        self._last_pull = -math.inf
        self._settling_until = -math.inf  # a watcher's fast pulls, after membership news
        self._left = False
        self._unanswered: set[str] = set()  # live members pulled that have not replied since
        self._known: dict[str, Peer] = {}  # a watcher's members, to rejoin through (bounded)

    @property
    def watcher(self) -> bool:
        return self.own_digest is None

    # -- inputs ----------------------------------------------------------------

    def tick(self, now: float) -> list[Send]:
        """Advance to ``now``: heartbeat, failure detection, rumor pushes, a pull when due."""
        if self._left:
            return []
        if not self.watcher:
            if now >= self._next_heartbeat:
                self._beat(now)
            self.directory.expire(now)
        self._seen.forget(now)
        peers = self._peers()
        sends: list[Send] = []
        if self._rumors and not self.watcher and peers:
            push = Push(self.topic, self._rumors.take())
            sends += [Send(p, push) for p in self._sample(peers, self.config.fanout)]
        if now >= self._last_pull + self._pull_interval(now, peers):
            self._last_pull = now
            own = () if self.watcher else (self._own_raw(),)
            self._unanswered &= {e.node_id for e in peers}  # forgotten once suspected
            answering = [e for e in peers if e.node_id not in self._unanswered] or peers
            # With no known member yet, (re)join through every bootstrap peer.
            targets = self._sample(answering, 1) if peers else list(self.bootstrap)
            if self.watcher:
                targets += self._rejoin_through(peers)
            if self.hints:
                chosen = {p.node_id for p in targets}
                targets += [h for h in self.hints if h.node_id not in chosen and h.node_id != self.self_id]
                self.hints = []
            # Members only ever talk to members: once a partition outlasts ``remove_after``
            # each side has removed the other for good. Pulling a bootstrap peer that is not
            # in the directory (gone, or across a healed cut) is what joins them up again.
            lost = [p for p in self.bootstrap if self.directory.get(p.node_id) is None]
            if peers and lost:
                targets.append(self.rng.choice(lost))
            sends += [Send(p, Pull(self.topic, own)) for p in targets]
            self._unanswered |= {p.node_id for p in targets}
        self.stats["sent_messages"] += len(sends)
        return sends

    def _pull_interval(self, now: float, peers: list[Entry]) -> float:
        """A pull every ``pull_interval``; every heartbeat for a watcher (pulls are all it hears),
        every tick while its mesh settles (a join it would otherwise see up to a heartbeat late),
        and every heartbeat for a member with no live peer (cut off, or its peers died): knocking
        on its bootstrap peers' doors is how it rejoins once the cut heals."""
        if self.watcher:
            return 0.0 if now < self._settling_until else self.config.heartbeat_interval
        return self.config.pull_interval if peers else self.config.heartbeat_interval

    def handle(self, sender: str, message: Message, now: float) -> PullReply | None:
        """Take a message from ``sender`` (the node id the transport authenticated).

        Returns the reply to send back on the same stream, if the message asks for one.
        """
        if message.topic != self.topic:
            self.stats["wrong_topic"] += 1
            return None
        self.stats["received_messages"] += 1
        duplicates = 0
        for raw in message.digests[: self.config.max_digests_per_message]:
            if not isinstance(raw, (bytes, bytearray)):
                self.stats["malformed"] += 1
                continue
            msg_id = digests.message_id(raw)
            if msg_id in self._seen:  # most digests, once a mesh is busy: keep this path short
                duplicates += 1
            else:
                self._ingest(raw, msg_id, now)
        if duplicates:
            self.stats["duplicates"] += duplicates
        if len(message.digests) > self.config.max_digests_per_message:
            self.stats["truncated"] += 1
        if isinstance(message, PullReply):
            self._unanswered.discard(sender)
        if isinstance(message, Pull) and not self.watcher and not self._left:
            return PullReply(self.topic, self._full_state())
        return None

    def leave(self, now: float, max_targets: int = 8) -> list[Send]:
        """Announce a clean leave to up to ``max_targets`` members; the core then goes quiet."""
        if self.watcher or self._left:
            return []
        self._left = True
        self.heartbeat += 1
        raw = self.own_digest(self.heartbeat, True).raw  # type: ignore[misc]
        return [Send(p, Push(self.topic, (raw,))) for p in self._sample(self._peers(), max_targets)]

    # -- internals -------------------------------------------------------------

    def _beat(self, now: float) -> None:
        self.heartbeat += 1
        self._next_heartbeat = now + self.config.heartbeat_interval
        signed = self.own_digest(self.heartbeat, False)  # type: ignore[misc]
        self._seen.add(signed.msg_id, now)
        self.directory.apply(signed, now)
        self._rumors.add(signed.msg_id, signed.raw)

    def _ingest(self, raw: bytes, msg_id: bytes, now: float) -> None:
        """Decode, verify and apply one digest not seen before."""
        self._seen.add(msg_id, now)
        try:
            signed = digests.decode(raw, self.verify)
        except ForgedDigest:
            self.stats["forged"] += 1
            return
        except DigestError:
            self.stats["malformed"] += 1
            return
        d = signed.digest
        if d.mesh != self.mesh:
            self.stats["wrong_mesh"] += 1
            return
        if d.node_id == self.self_id:
            return
        change = self.directory.apply(signed, now)
        if change is None:
            self.stats["stale"] += 1
            return
        self.stats["news"] += 1
        if not self.watcher:  # a watcher never pushes: it would only hoard rumors
            self._rumors.add(msg_id, signed.raw)
        elif change.kind is not ChangeKind.HEARTBEAT:  # the mesh is changing: look again next tick
            self._settling_until = now + self.config.settle_window

    def _rounds(self) -> int:
        if self.config.rumor_rounds is not None:
            return self.config.rumor_rounds
        members = self.directory.count(self.mesh)
        return math.ceil(math.log2(members + 1)) + 2

    def _peers(self) -> list[Entry]:
        """The live members but this node; ``_sample`` turns the chosen ones into ``Peer``s."""
        own = self.directory.get(self.self_id)
        return [e for e in self.directory.entries(mesh=self.mesh, alive_only=True) if e is not own]

    def _rejoin_through(self, peers: list[Entry], keep: int = 32) -> list[Peer]:
        """A watcher's extra pull target: with no live member left, one it knew that is gone."""
        for e in peers:
            self._known.pop(e.node_id, None)
            self._known[e.node_id] = Peer(e.node_id, e.addrs)
        while len(self._known) > keep:
            del self._known[next(iter(self._known))]
        if peers:
            return []
        bootstrap = {p.node_id for p in self.bootstrap}
        gone = [p for p in self._known.values() if p.node_id not in bootstrap]
        return [self.rng.choice(gone)] if gone else []

    def _sample(self, peers: list[Entry], k: int) -> list[Peer]:
        chosen = peers if len(peers) <= k else self.rng.sample(peers, k)
        return [Peer(e.node_id, e.addrs) for e in chosen]

    def _own_raw(self) -> bytes:
        own = self.directory.get(self.self_id)
        return own.signed.raw if own else self.own_digest(self.heartbeat, False).raw  # type: ignore[misc]

    def _full_state(self) -> tuple[bytes, ...]:
        entries = self.directory.entries(mesh=self.mesh)
        cap = self.config.max_digests_per_message
        if len(entries) > cap:
            # A receiver ingests only the first ``cap`` digests of a message: sorted by name,
            # the same tail would be cut from every reply and never repaired by anti-entropy.
            # A random ``cap`` of them instead lets successive pulls cover the whole mesh.
            entries = self.rng.sample(entries, cap)
        return tuple(e.signed.raw for e in entries)
