"""The backbone core on its own: records, claims, the wire format, the member table."""

from __future__ import annotations

import random

import pytest

from fabric.crossmesh import Failover, target_mesh
from fabric.directory import ChangeKind, Directory
from fabric.errors import ConfigError, DigestError, ForgedDigest, FrameError
from fabric.frames import Frame, Kind
from fabric.gossip import claims
from fabric.gossip import digest as digests
from fabric.gossip.backbone import BACKBONE_TOPIC, BackboneConfig, BackboneCore
from fabric.gossip.backbone_wire import WIRE, Probe, ProbeAck, ProbeReply, ProbeRequest, Rumors
from fabric.gossip.members import DEAD
from fabric.gossip.proto import Peer, Send
from fabric.gossip.sim import FakeKeys
from fabric.gossip.summary import SummaryPublisher, entries_hash
from fabric.node_config import NodeConfig

KEYS = FakeKeys()
CONFIG = BackboneConfig()


def seat(rng: random.Random, mesh: str = "m1", type: str = "gateway", meta: dict | None = None) -> BackboneCore:
    node_id, signer = KEYS.new(rng)

    def own(version: int, leaving: bool) -> digests.SignedDigest:
        return digests.sign(digests.Digest(node_id, mesh, type, ("sim://x",), 1, version, leaving, meta or {}), signer)

    return BackboneCore(node_id, own, signer, KEYS.verify, CONFIG, rng)


def exchange(cores: list[BackboneCore], now: float) -> None:
    """One tick of every core, and every message (replies included) delivered at ``now``."""
    by_id = {core.self_id: core for core in cores}
    pending = [(core.self_id, send) for core in cores for send in core.tick(now)]
    while pending:
        src, send = pending.pop(0)
        dst = by_id.get(send.to.node_id)
        reply = dst.handle(src, send.message, now) if dst else None
        if reply is not None:
            pending.append((dst.self_id, Send(Peer(src), reply)))


def test_seats_join_through_a_bootstrap_probe_and_agree():
    rng = random.Random(1)
    a, b, c = seat(rng), seat(rng, mesh="m2"), seat(rng, mesh="m3")
    b.bootstrap = c.bootstrap = [Peer(a.self_id)]
    for step in range(10):
        exchange([a, b, c], step * CONFIG.tick_interval)
    assert {m.name for m in a.members()} == {m.name for m in b.members()} == {m.name for m in c.members()}
    assert len(a.table) == 3 and a.table.state_hash() == b.table.state_hash() == c.table.state_hash()


def test_a_probe_between_agreeing_seats_is_a_hash_and_back():
    rng = random.Random(2)
    a, b = seat(rng), seat(rng)
    for core in (a, b):
        core.tick(0.0)
    for raw in (a.table.get(a.self_id).signed.raw,):
        b.handle(a.self_id, Rumors(BACKBONE_TOPIC, (raw,)), 0.0)
    a.handle(b.self_id, Rumors(BACKBONE_TOPIC, (b.table.get(b.self_id).signed.raw,)), 0.0)
    reply = b.handle(a.self_id, Probe(BACKBONE_TOPIC, a.table.state_hash()), 0.1)
    assert isinstance(reply, ProbeReply) and reply.vector is None and reply.records == ()
    assert b.stats["in_sync"] == 1
    # A stale hash gets the state vector, so the prober can ask for what it lacks.
    reply = b.handle(a.self_id, Probe(BACKBONE_TOPIC, b"\0" * 16), 0.2)
    assert reply.vector is not None and len(reply.vector) == 2


def test_forged_records_and_claims_are_dropped_and_counted():
    rng = random.Random(3)
    a, victim, mallory = seat(rng), seat(rng), seat(rng)
    for core in (a, victim, mallory):
        core.tick(0.0)
    for core in (victim, mallory):
        a.handle(core.self_id, Rumors(BACKBONE_TOPIC, (core.table.get(core.self_id).signed.raw,)), 0.0)
    forged_record = digests.sign(digests.Digest(victim.self_id, "m1", "gateway", ("evil:1",), 1, 99), mallory.signer)
    forged_claim = claims.make(victim.self_id, (1, 99), a.self_id, mallory.signer)  # in a's name
    broker = seat(rng, type="broker")
    broker.tick(0.0)
    a.handle(mallory.self_id, Rumors(BACKBONE_TOPIC, (forged_record.raw, b"junk",
                                                      broker.table.get(broker.self_id).signed.raw),
                                     (forged_claim.raw,)), 0.1)
    assert a.stats["forged"] == 2 and a.stats["malformed"] == 1 and a.stats["wrong_type"] == 1
    assert a.table.get(victim.self_id).digest.addrs == ("sim://x",) and not a.table.get(victim.self_id).suspect


def test_a_claim_about_oneself_is_refuted_with_a_newer_record():
    rng = random.Random(4)
    a, b = seat(rng), seat(rng)
    for core in (a, b):
        core.tick(0.0)
    a.handle(b.self_id, Rumors(BACKBONE_TOPIC, (b.table.get(b.self_id).signed.raw,)), 0.0)
    claim = claims.make(a.self_id, a.table.get(a.self_id).version, b.self_id, b.signer)
    a.handle(b.self_id, Rumors(BACKBONE_TOPIC, (), (claim.raw,)), 0.1)
    assert a.stats["refuted"] == 1
    before = a.version
    a.tick(0.2)
    assert a.version == before + 1  # re-signed: the newer record overrides the claim everywhere


def test_claims_from_strangers_are_ignored_and_an_unrefuted_suspect_is_removed():
    rng = random.Random(5)
    a, b, stranger = seat(rng), seat(rng), seat(rng)
    for core in (a, b, stranger):
        core.tick(0.0)
    a.handle(b.self_id, Rumors(BACKBONE_TOPIC, (b.table.get(b.self_id).signed.raw,)), 0.0)
    version = a.table.get(b.self_id).version
    a.handle(stranger.self_id, Rumors(BACKBONE_TOPIC, (), (claims.make(b.self_id, version, stranger.self_id,
                                                                       stranger.signer).raw,)), 0.1)
    assert a.stats["unknown_claimant"] == 1 and not a.table.get(b.self_id).suspect
    changes = []
    a.table.subscribe(lambda c: changes.append(c.kind))
    a._suspect(b.self_id, version, 0.2)
    assert a.table.get(b.self_id).suspect and changes == [ChangeKind.SUSPECT]
    a.tick(0.2 + CONFIG.suspect_timeout)
    assert a.table.get(b.self_id) is None and changes[-1] is ChangeKind.REMOVED
    assert any(e[3] == DEAD for e in a.table.vector())
    # The buried record does not come back; a newer one (a refutation) does.
    a.handle(b.self_id, Rumors(BACKBONE_TOPIC, (b.own_record(b.version, False).raw,)), 5.0)
    assert a.table.get(b.self_id) is None
    a.handle(b.self_id, Rumors(BACKBONE_TOPIC, (b.own_record(b.version + 1, False).raw,)), 5.0)
    assert a.table.get(b.self_id) is not None


@pytest.mark.parametrize("message", [
    Rumors(BACKBONE_TOPIC, (b"r1",), (b"c1",)),
    Probe(BACKBONE_TOPIC, b"h" * 16, (b"own",), (b"i" * 32,)),
    ProbeReply(BACKBONE_TOPIC, b"h" * 16, (b"r",), (b"c",), ((b"i" * 32, 1, 2, 0),)),
    ProbeReply(BACKBONE_TOPIC, b"h" * 16),
    ProbeRequest(BACKBONE_TOPIC, b"t" * 32),
    ProbeAck(BACKBONE_TOPIC, b"t" * 32),
])
def test_messages_survive_the_wire(message):
    assert WIRE.decode(WIRE.encode(message)) == message


@pytest.mark.parametrize("body", [
    {"topic": b"short", "digests": []},
    {"topic": BACKBONE_TOPIC, "digests": "nope"},
    {"topic": BACKBONE_TOPIC, "digests": [], "hash": 7},
    {"topic": BACKBONE_TOPIC, "digests": [], "hash": b"h", "vector": [[b"short", 1, 2, 0]]},
])
def test_malformed_backbone_frames_are_frame_errors(body):
    kind = Kind.GOSSIP_PULL_REPLY if "vector" in body else Kind.GOSSIP_PULL
    with pytest.raises(FrameError):
        WIRE.decode(Frame(kind, body))


@pytest.mark.parametrize("body, error", [
    ({"probe_for": b"short"}, "'probe_for' must be a 32-byte node id"),
    ({"alive": "ab" * 32}, "'alive' must be a 32-byte node id"),
    ({"probe_for": b"t" * 32, "alive": b"t" * 32}, "one of 'probe_for' and 'alive'"),
    ({"probe_for": b"t" * 32, "digests": [b"record"]}, "one of 'probe_for' and 'alive'"),
    ({"alive": b"t" * 32, "claims": [b"claim"]}, "one of 'probe_for' and 'alive'"),
])
def test_malformed_indirect_probe_frames_are_frame_errors(body, error):
    with pytest.raises(FrameError, match=error):
        WIRE.decode(Frame(Kind.GOSSIP_PUSH, {"topic": BACKBONE_TOPIC, "digests": [], **body}))


def joined(n: int, seed: int) -> list[BackboneCore]:
    """``n`` seats that know each other, after a few exchanges at t < 2 s."""
    rng = random.Random(seed)
    cores = [seat(rng, mesh=f"m{i}") for i in range(n)]
    for core in cores[1:]:
        core.bootstrap = [Peer(cores[0].self_id)]
    for step in range(10):
        exchange(cores, step * CONFIG.tick_interval)
    assert all(len(core.table) == n for core in cores)
    return cores


def deliver(src: BackboneCore, dst: BackboneCore, message, now: float):
    """``dst`` handles ``message`` from ``src``; its reply and its urgent sends."""
    reply = dst.handle(src.self_id, message, now)
    return reply, dst.take_urgent()


def test_a_silent_peer_is_probed_through_others_before_it_is_suspected():
    a, b, c = cores = joined(3, seed=21)
    by_id = {core.self_id: core for core in cores}
    now = 5.0
    probe = next(s for s in a.tick(now) if isinstance(s.message, Probe))  # lost on the way
    target, helper = by_id[probe.to.node_id], next(x for x in (b, c) if x.self_id != probe.to.node_id)
    direct = CONFIG.probe_timeout / 3
    assert not [s for s in a.tick(now + direct / 2) if isinstance(s.message, ProbeRequest)]  # not yet
    asks = [s for s in a.tick(now + direct) if isinstance(s.message, ProbeRequest)]
    assert [(s.to.node_id, s.message.target) for s in asks] == [(helper.self_id, bytes.fromhex(target.self_id))]
    assert a.stats["indirect_probes"] == 1
    # The helper probes the target at once, and acks to a when the target answers.
    reply, urgent = deliver(a, helper, asks[0].message, now + direct)
    assert reply is None and [(s.to.node_id, type(s.message)) for s in urgent] == [(target.self_id, Probe)]
    answer, _ = deliver(helper, target, urgent[0].message, now + direct)
    _, acks = deliver(target, helper, answer, now + direct)
    assert [(s.to.node_id, s.message) for s in acks] == [(a.self_id, ProbeAck(BACKBONE_TOPIC, bytes.fromhex(target.self_id)))]
    deliver(helper, a, acks[0].message, now + direct)
    a.tick(now + CONFIG.probe_timeout)
    assert not a.table.get(target.self_id).suspect
    assert (a.stats["indirect_acks"], a.stats["probe_failed"], helper.stats["relayed_probes"]) == (1, 0, 1)


def test_a_peer_nobody_hears_is_suspected_at_the_probe_timeout():
    a, _, _ = joined(3, seed=22)
    now = 5.0
    probe = next(s for s in a.tick(now) if isinstance(s.message, Probe))
    asks = [s for s in a.tick(now + CONFIG.probe_timeout / 3) if isinstance(s.message, ProbeRequest)]
    assert len(asks) == 1  # the helper's probe is lost too: no ack
    a.tick(now + CONFIG.probe_timeout)
    assert a.table.get(probe.to.node_id).suspect and a.stats["probe_failed"] == 1


def test_indirect_probe_messages_from_strangers_or_unasked_are_ignored():
    a, b, c = joined(3, seed=23)
    stranger = seat(random.Random(99))
    stranger.tick(0.0)
    # A non-member cannot make a member probe someone (no amplification), nor ask about non-members.
    assert deliver(stranger, a, ProbeRequest(BACKBONE_TOPIC, bytes.fromhex(b.self_id)), 5.0) == (None, [])
    assert deliver(b, a, ProbeRequest(BACKBONE_TOPIC, bytes.fromhex(stranger.self_id)), 5.0) == (None, [])
    assert deliver(b, a, ProbeRequest(BACKBONE_TOPIC, bytes.fromhex(a.self_id)), 5.0) == (None, [])
    assert a.stats["ignored_probe_requests"] == 3
    # An ack a did not ask for changes nothing.
    deliver(b, a, ProbeAck(BACKBONE_TOPIC, bytes.fromhex(c.self_id)), 5.0)
    assert a.stats["unsolicited_acks"] == 1 and a.stats["indirect_acks"] == 0


def test_claims_round_trip_and_reject_forgeries():
    rng = random.Random(6)
    (a, sign_a), (b, _) = KEYS.new(rng), KEYS.new(rng)
    claim = claims.make(b, (1, 2), a, sign_a)
    assert claims.decode(claim.raw, KEYS.verify) == claim
    with pytest.raises(ForgedDigest):
        claims.decode(claims.make(b, (1, 2), b, sign_a).raw, KEYS.verify)
    with pytest.raises(DigestError):
        claims.decode(b"\x93\x01\x02\x03", KEYS.verify)


def test_the_summary_moves_on_membership_not_on_heartbeats():
    rng = random.Random(7)
    directory = Directory("self")
    changed = []
    publisher = SummaryPublisher(directory, "m1", lambda: changed.append(1), lambda: [5])
    ids = [KEYS.new(rng) for _ in range(3)]
    for node_id, signer in ids:
        directory.apply(digests.sign(digests.Digest(node_id, "m1", "broker", ("a:1",), 1, 1), signer), 0.0)
    assert len(changed) == 3 and publisher.version == 9  # Lamport: above the peers' 5: at start, then once per change
    assert publisher.meta()["n"] == {"broker": 3} and publisher.hash == entries_hash(directory.entries())
    node_id, signer = ids[0]
    directory.apply(digests.sign(digests.Digest(node_id, "m1", "broker", ("a:1",), 1, 2), signer), 0.1)
    directory.apply(digests.sign(digests.Digest(node_id, "m1", "broker", ("a:1",), 1, 3, meta={"t": 1}), signer), 0.2)
    other_mesh_id, other_signer = KEYS.new(rng)
    directory.apply(digests.sign(digests.Digest(other_mesh_id, "m2", "broker", ("b:1",), 1, 1), other_signer), 0.2)
    assert len(changed) == 3  # heartbeats, metadata and other meshes change nothing
    directory.apply(digests.sign(digests.Digest(node_id, "m1", "broker", ("a:2",), 1, 4), signer), 0.3)
    assert len(changed) == 4  # an address did


def test_the_cross_mesh_mode_is_checked_and_backbone_peers_parsed(tmp_path):
    with pytest.raises(ConfigError, match="--cross-mesh must be 'backbone' or 'watch'"):
        NodeConfig(mesh="m1", type="gateway", data_dir=tmp_path, cross_mesh="bridge")
    with pytest.raises(ConfigError, match="bad peer address"):
        NodeConfig(mesh="m1", type="gateway", data_dir=tmp_path, backbone_peers=["nope"])
    assert NodeConfig(mesh="m1", type="gateway", data_dir=tmp_path).cross_mesh == "backbone"


@pytest.mark.parametrize("target, mesh", [("mesh2.broker", "mesh2"), ("mesh2.broker.abc123", "mesh2"),
                                          ("abc123", None), ("Bad Mesh.broker", None)])
def test_a_target_names_its_mesh(target, mesh):
    assert target_mesh(target) == mesh


def test_failover_tries_recently_failed_peers_last():
    peers = [Peer(f"{i:064x}") for i in range(4)]
    failover = Failover(rng=random.Random(1))
    failover.failed(peers[0].node_id)
    failover.failed(peers[2].node_id)
    for _ in range(5):
        order = failover.order(peers)
        assert {p.node_id for p in order[2:]} == {peers[0].node_id, peers[2].node_id}
