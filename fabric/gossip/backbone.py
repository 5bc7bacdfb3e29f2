"""The backbone core: cross-mesh membership in O(1) messages per member, no I/O.

The backbone is one gossip topic, ``blake3("meshfabric/backbone")``, joined by the gateways
and consoles of every mesh. Each member signs one *record* (a ``Digest`` of itself whose
``meta`` is its mesh summary) and re-signs it, at a higher version, only when it changes.
Nothing is gossiped periodically by everyone:

* **News is rumored**: a changed record, or a suspicion (``claims.py``), is pushed for
  ``rumor_rounds`` ticks to ``fanout`` random members, batched, deduplicated by message id.
* **Liveness is probed** (as in SWIM): every ``probe_interval`` a member probes the next
  member of a shuffled round. No reply within ``direct_timeout`` and it asks
  ``indirect_probes`` other members to probe the target for it (``probes.py``); if neither
  the target nor a helper answered within ``probe_timeout``, the target is *suspect*:
  a signed claim spreads as a rumor; a live target that hears it refutes it by re-signing
  its record at a higher version; a suspect not refuted within ``suspect_timeout`` is removed.
* **A probe is also anti-entropy**: it carries a 16-byte hash of the prober's member table.
  Equal hashes end it (the common case: ~100 bytes each way). Otherwise the reply carries the
  state vector (every member's version and status); the prober then asks for what is newer
  there, sends back what is newer here, and turns disagreements about who is dead into claims
  the accused can refute, so healed partitions and missed rumors converge.
* A member pulls a bootstrap peer it does not hold every ``rejoin_interval``: the two sides
  of a healed partition find each other again.

Per member and second that is one probe, one reply and one probe received in steady state,
whatever the number of meshes; news costs O(log M) rounds to spread.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import blake3

from ..directory import ChangeKind
from ..errors import DigestError, ForgedDigest
from . import claims as claimlib
from . import digest as digests
from .backbone_wire import WIRE, BackboneMessage, Probe, ProbeAck, ProbeReply, ProbeRequest, Rumors
from .digest import SignedDigest, Signer, Verifier
from .members import ALIVE, DEAD, Member, MemberTable, VectorEntry
from .probes import ProbeTracker
from .proto import GossipConfig, Peer, Send
from .rumors import RumorQueue, SeenIds

BACKBONE_TOPIC = blake3.blake3(b"meshfabric/backbone").digest()
MEMBER_TYPES = ("gateway", "console")

T = TypeVar("T")


@dataclass(frozen=True)
class BackboneConfig:
    """Timings (seconds) and bounds of the backbone protocol."""

    tick_interval: float = 0.2
    probe_interval: float = 1.0
    probe_timeout: float = 1.0
    direct_timeout: float | None = None  # None: probe_timeout / 3; then ask others to probe
    indirect_probes: int = 3  # helpers asked (SWIM's k); 0: suspect on a failed direct probe
    suspect_timeout: float = 3.0
    rejoin_interval: float = 2.0
    fanout: int = 3
    rumor_rounds: int | None = None  # None: ceil(log2(members + 1)) + 2
    max_items_per_message: int = 256
    seen_ttl: float = 30.0
    tombstone_ttl: float = 60.0

    @classmethod
    def like(cls, gossip: GossipConfig) -> "BackboneConfig":
        """Timings in step with a mesh's: a probe per two heartbeats, suspects removed after
        ``remove_after``."""
        probe = 2 * gossip.heartbeat_interval
        return cls(tick_interval=gossip.tick_interval, probe_interval=probe, probe_timeout=probe,
                   suspect_timeout=gossip.remove_after, rejoin_interval=gossip.pull_interval)


# -- the core ----------------------------------------------------------------------------------


@dataclass
class BackboneCore:
    """One member's view of the backbone.

    ``own_record(version, leaving)`` signs this member's record (its summary in ``meta``);
    ``signer`` signs its claims. Call ``changed()`` when the record's content moved.
    """

    self_id: str
    own_record: Callable[[int, bool], SignedDigest]
    signer: Signer
    verify: Verifier
    config: BackboneConfig = field(default_factory=BackboneConfig)
    rng: random.Random = field(default_factory=random.Random)
    bootstrap: list[Peer] = field(default_factory=list)

    wire = WIRE
    mesh = "backbone"  # the key a node's status files this core's counters under

    def __post_init__(self) -> None:
        cfg = self.config
        self.topic = BACKBONE_TOPIC
        self.stats: Counter[str] = Counter()
        self.table = MemberTable(self.self_id, cfg.tombstone_ttl)
        self.version = 0
        self._records = RumorQueue(self._rounds, cfg.max_items_per_message)
        self._claims = RumorQueue(self._rounds, cfg.max_items_per_message)
        self._seen = SeenIds(cfg.seen_ttl)
        direct = cfg.probe_timeout / 3 if cfg.direct_timeout is None else cfg.direct_timeout
        self._probes = ProbeTracker(direct if cfg.indirect_probes else cfg.probe_timeout, cfg.probe_timeout)
        self._urgent: list[Send] = []  # indirect probes and their acks: see take_urgent()
        self._round: list[str] = []  # the rest of this probe round, shuffled
        self._outbox: list[Send] = []  # follow-ups of a reconciliation, sent at the next tick
        self._dirty = True  # publish the first record at the first tick
        self._next_probe = -math.inf
        self._next_rejoin = -math.inf
        self._left = False

    def changed(self) -> None:
        """This member's record changed (its summary, say): re-sign it at the next tick."""
        self._dirty = True

    # -- inputs ----------------------------------------------------------------

    def tick(self, now: float) -> list[Send]:
        """Advance to ``now``: publish, time out probes and suspects, push rumors, probe."""
        if self._left:
            return []
        cfg = self.config
        self._seen.forget(now)
        self._probes.forget(now)
        if self._dirty:
            self._publish(now)
        asks = self._time_out_probes(now)
        self.stats["removed"] += len(self.table.expire(now))
        sends, self._outbox, self._urgent = [*self._outbox, *self._urgent, *asks], [], []
        others = self.table.others()
        if (self._records or self._claims) and others:
            rumors = Rumors(self.topic, self._records.take(), self._claims.take())
            sends += [Send(p, rumors) for p in self._sample(others, cfg.fanout)]
        if now >= self._next_probe:
            self._next_probe = now + cfg.probe_interval
            state_hash = self.table.state_hash()
            # A member knows us already (if not, the hashes differ and reconciling tells it);
            # a bootstrap peer we do not hold gets our record with the probe.
            join = Probe(self.topic, state_hash, (self._own().signed.raw,))
            target = self._next_target()
            if target is not None:
                self._probes.start(target.node_id, now)
                sends.append(Send(target, Probe(self.topic, state_hash)))
            else:  # alone: (re)join through every bootstrap peer
                sends += [Send(p, join) for p in self.bootstrap if p.node_id != self.self_id]
            lost = [p for p in self.bootstrap if p.node_id != self.self_id and self.table.get(p.node_id) is None]
            if target is not None and lost and now >= self._next_rejoin:
                self._next_rejoin = now + cfg.rejoin_interval
                sends.append(Send(self.rng.choice(lost), join))
        self.stats["sent_messages"] += len(sends)
        return sends

    def handle(self, sender: str, message: BackboneMessage, now: float) -> ProbeReply | None:
        """Take a message from ``sender`` (authenticated by the transport); a probe gets a reply."""
        if message.topic != self.topic:
            self.stats["wrong_topic"] += 1
            return None
        self.stats["received_messages"] += 1
        if self.version == 0:
            self._publish(now)  # a message before our first tick
        if isinstance(message, (ProbeRequest, ProbeAck)):
            self._indirect(sender, message, now)
            return None
        cap = self.config.max_items_per_message
        for raw in message.records[:cap]:
            self._ingest_record(raw, now)
        for raw in getattr(message, "claims", ())[:cap]:
            self._ingest_claim(raw, now)
        if isinstance(message, ProbeReply):
            self._probes.answered(sender)
            ack = ProbeAck(self.topic, bytes.fromhex(sender))
            self._urgent += [Send(self._peer_of_id(r), ack) for r in self._probes.relayed(sender, now)]
            if message.vector is not None:
                self._reconcile(sender, message.vector, now)
            return None
        if not isinstance(message, Probe) or self._left:
            return None
        mine = self.table.state_hash()
        if message.want:
            wanted = [self.table.get(i.hex()) for i in message.want[:cap]]
            return ProbeReply(self.topic, mine, tuple(m.signed.raw for m in wanted if m is not None))
        if message.state_hash == mine:
            self.stats["in_sync"] += 1
            return ProbeReply(self.topic, mine)
        self.stats["out_of_sync"] += 1
        return ProbeReply(self.topic, mine, vector=tuple(self.table.vector()))

    def take_urgent(self) -> list[Send]:
        """Sends that ``handle`` produced and that should not wait for the next tick: a helper's
        probe for another member, and its ack. Drivers send them right after ``handle``."""
        sends, self._urgent = self._urgent, []
        self.stats["sent_messages"] += len(sends)
        return sends

    def leave(self, now: float, max_targets: int = 8) -> list[Send]:
        """Announce a clean leave to up to ``max_targets`` members; the core then goes quiet."""
        if self._left:
            return []
        self._left = True
        self.version += 1
        rumors = Rumors(self.topic, (self.own_record(self.version, True).raw,))
        return [Send(p, rumors) for p in self._sample(self.table.others(), max_targets)]

    # -- views -----------------------------------------------------------------

    def members(self, mesh: str | None = None, type: str | None = None,
                alive_only: bool = False) -> list[Member]:
        """Known members (this one included), sorted by name."""
        found = [m for m in self.table if (mesh is None or m.mesh == mesh) and (type is None or m.type == type)
                 and not (alive_only and m.suspect)]
        return sorted(found, key=lambda m: m.name)

    # -- internals: news -------------------------------------------------------

    def _publish(self, now: float) -> None:
        self._dirty = False
        self.version += 1
        signed = self.own_record(self.version, False)
        self.table.apply(signed, now)
        self._seen.add(signed.msg_id, now)
        self._records.add(signed.msg_id, signed.raw)

    def _own(self) -> Member:
        return self.table.get(self.self_id)  # type: ignore[return-value]  # published at the first tick

    def _decode_new(self, raw: bytes, now: float, decode: Callable[[bytes, Verifier], T]) -> T | None:
        """``decode(raw)`` if ``raw`` was not seen before and verifies; else count why not."""
        msg_id = digests.message_id(raw)
        if msg_id in self._seen:
            self.stats["duplicates"] += 1
            return None
        self._seen.add(msg_id, now)
        try:
            return decode(raw, self.verify)
        except ForgedDigest:
            self.stats["forged"] += 1
        except DigestError:
            self.stats["malformed"] += 1
        return None

    def _ingest_record(self, raw: bytes, now: float) -> None:
        signed = self._decode_new(raw, now, digests.decode)
        if signed is None:
            return
        if signed.digest.type not in MEMBER_TYPES:
            self.stats["wrong_type"] += 1
            return
        if signed.digest.node_id == self.self_id:
            return
        change = self.table.apply(signed, now)
        if change is None:
            self.stats["stale"] += 1
            return
        self.stats["news"] += 1
        if change is ChangeKind.JOINED:
            self._round.insert(self.rng.randrange(len(self._round) + 1), signed.digest.node_id)
        self._records.add(signed.msg_id, raw)

    def _ingest_claim(self, raw: bytes, now: float) -> None:
        claim = self._decode_new(raw, now, claimlib.decode)
        if claim is None:
            return
        if self.table.get(claim.claimant) is None:
            self.stats["unknown_claimant"] += 1
            return
        self._suspect(claim.subject, claim.version, now, claim.raw)

    def _suspect(self, node_id: str, version: tuple[int, int], now: float, raw: bytes | None = None) -> None:
        """Suspect ``node_id`` at ``version`` (refute it, if it is this member), and spread the
        claim: ``raw``, or a new one of our own."""
        if node_id == self.self_id:
            if version >= self._own().version:
                self.stats["refuted"] += 1
                self._dirty = True
            return
        if not self.table.suspect(node_id, version, now + self.config.suspect_timeout):
            return
        self.stats["suspected"] += 1
        if raw is None:
            raw = claimlib.make(node_id, version, self.self_id, self.signer).raw
        msg_id = digests.message_id(raw)
        self._seen.add(msg_id, now)
        self._claims.add(msg_id, raw)

    # -- internals: probes and reconciliation -----------------------------------

    def _time_out_probes(self, now: float) -> list[Send]:
        """Ask helpers about targets silent since ``direct_timeout``; suspect those silent
        since ``probe_timeout``. Returns the requests to the helpers."""
        ask, failed = self._probes.due(now)
        sends: list[Send] = []
        live = [m.node_id for m in self.table.others() if not m.suspect] if ask else []
        for target in ask:  # nobody to ask: the deadline decides
            helpers = self._probes.ask_helpers(target, live, self.config.indirect_probes, self.rng)
            self.stats["indirect_probes"] += bool(helpers)
            request = ProbeRequest(self.topic, bytes.fromhex(target))
            sends += [Send(self._peer_of_id(h), request) for h in helpers]
        for target in failed:
            member = self.table.get(target)
            if member is not None and not member.suspect:
                self.stats["probe_failed"] += 1
                self._suspect(target, member.version, now)
        return sends

    def _indirect(self, sender: str, message: ProbeRequest | ProbeAck, now: float) -> None:
        """A member asks us to probe another one (relay it), or a helper says the member we
        asked about answered (it is not suspected). Requests from or about non-members and
        acks we did not ask for are counted and ignored."""
        target = message.target.hex()
        if isinstance(message, ProbeAck):
            self.stats["indirect_acks" if self._probes.acked(sender, target) else "unsolicited_acks"] += 1
            return
        member = self.table.get(target)
        if self.table.get(sender) is None or member is None or target in (self.self_id, sender):
            self.stats["ignored_probe_requests"] += 1
            return
        self.stats["relayed_probes"] += 1
        if self._probes.relay(sender, target, now):
            self._urgent.append(Send(self._peer_of(member), Probe(self.topic, self.table.state_hash())))

    def _next_target(self) -> Peer | None:
        """The next live member of the round; a new shuffled round when it is used up, so
        every member is probed by each other member once per round."""
        for _ in range(2):
            while self._round:
                member = self.table.get(self._round.pop())
                if member is not None and not member.suspect and member.node_id != self.self_id:
                    return self._peer_of(member)
            self._round = [m.node_id for m in self.table.others() if not m.suspect]
            self.rng.shuffle(self._round)
        return None

    def _reconcile(self, sender: str, vector: tuple[VectorEntry, ...], now: float) -> None:
        """Compare ``sender``'s state vector with ours: want what is newer there, send what is
        newer here, and turn each disagreement about who is dead into a claim to refute."""
        self.stats["reconciled"] += 1
        want: list[bytes] = []
        theirs: dict[str, tuple[int, int]] = {}
        for id_bytes, inc, ver, status in vector:
            node_id, version = id_bytes.hex(), (inc, ver)
            theirs[node_id] = version
            member, tomb = self.table.get(node_id), self.table.tombstone(node_id)
            if node_id == self.self_id or status == DEAD:
                if status != ALIVE and member is not None and member.version <= version:
                    self._suspect(node_id, member.version, now)
                continue
            if member is None and tomb is not None and version <= tomb:
                self._suspect_remote(node_id, tomb, now)
            elif member is None or version > member.version:
                want.append(id_bytes)
        newer = [m.signed.raw for m in self.table
                 if m.node_id != sender and (m.node_id not in theirs or theirs[m.node_id] < m.version)]
        peer = self._peer_of_id(sender)
        cap = self.config.max_items_per_message
        if want:
            self._outbox.append(Send(peer, Probe(self.topic, self.table.state_hash(), want=tuple(want[:cap]))))
        if newer:
            self._outbox.append(Send(peer, Rumors(self.topic, tuple(newer[:cap]))))

    def _suspect_remote(self, node_id: str, version: tuple[int, int], now: float) -> None:
        """We buried ``node_id`` at ``version``, a peer still holds it: let the peers suspect it
        (it refutes, if alive) with a claim of ours."""
        raw = claimlib.make(node_id, version, self.self_id, self.signer).raw
        msg_id = digests.message_id(raw)
        if msg_id not in self._seen:
            self._seen.add(msg_id, now)
            self._claims.add(msg_id, raw)

    # -- internals: peers ------------------------------------------------------

    def _rounds(self) -> int:
        if self.config.rumor_rounds is not None:
            return self.config.rumor_rounds
        return math.ceil(math.log2(len(self.table) + 1)) + 2

    def _sample(self, members: list[Member], k: int) -> list[Peer]:
        chosen = members if len(members) <= k else self.rng.sample(members, k)
        return [self._peer_of(m) for m in chosen]

    @staticmethod
    def _peer_of(member: Member) -> Peer:
        return Peer(member.node_id, member.digest.addrs)

    def _peer_of_id(self, node_id: str) -> Peer:
        member = self.table.get(node_id)
        if member is not None:
            return self._peer_of(member)
        return next((p for p in self.bootstrap if p.node_id == node_id), Peer(node_id))
