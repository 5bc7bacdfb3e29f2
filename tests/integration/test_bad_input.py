"""Forged digests and malformed frames sent to a real node: dropped, counted, node unharmed."""

from __future__ import annotations

import pytest
import pytest_asyncio

from fabric import control, frames
from fabric.frames import HEADER, VERSION
from fabric.frames import Frame, Kind
from fabric.gossip import digest as digests
from fabric.gossip.backbone import BACKBONE_TOPIC
from fabric.gossip.backbone_wire import WIRE, ProbeAck, ProbeRequest
from fabric.gossip.net import ALPN, to_frame
from fabric.gossip.proto import Pull, Push, mesh_topic
from fabric.identity import Identity
from fabric.streams import read_one
from fabric.transport import Transport
from tests.integration.conftest import directory_names, wait_until

pytestmark = pytest.mark.slow


def gossip_stats(node) -> dict:
    return control.request_sync(node.control_path, "status")["gossip"]["mesh1"]


@pytest_asyncio.fixture
async def attacker():
    transport = await Transport.bind(Identity.generate())
    yield transport
    await transport.close()


def peer_of(node):
    node_id, _, addrs = node.address.partition("@")
    return node_id, addrs.split(",")


@pytest.mark.asyncio
async def test_forged_digests_are_dropped_and_counted(spawn, attacker):
    target = spawn("mesh1", "broker")
    node_id, addrs = peer_of(target)
    victim, forger = Identity.generate(), Identity.generate()
    # 1. a digest for the victim's id, signed by another key
    fake = digests.Digest(victim.node_id, "mesh1", "broker", ("127.0.0.1:9",), 1, 1)
    forged = digests.sign(fake, forger.sign)
    # 2. a digest that tries to move the target itself to another address
    hijack = digests.sign(digests.Digest(node_id, "mesh1", "broker", ("127.0.0.1:9",), 2**40, 1), forger.sign)
    await attacker.send(node_id, addrs, ALPN, to_frame(Push(mesh_topic("mesh1"), (forged.raw, hijack.raw))))

    stats = wait_until(lambda: (s := gossip_stats(target)).get("forged", 0) >= 2 and s, 5, "two forged digests counted")
    assert stats["forged"] == 2
    names = directory_names(target)
    assert fake.name not in names
    entry = next(e for e in control.request_sync(target.control_path, "directory")["entries"] if e["name"] == target.name)
    assert "127.0.0.1:9" not in entry["addrs"]

    # A correctly signed digest from a real key *is* accepted: the check is the signature.
    honest = digests.sign(digests.Digest(forger.node_id, "mesh1", "compute", ("127.0.0.1:9",), 1, 1), forger.sign)
    await attacker.send(node_id, addrs, ALPN, to_frame(Push(mesh_topic("mesh1"), (honest.raw,))))
    wait_until(lambda: honest.digest.name in directory_names(target), 5, "the honest digest to be accepted")


@pytest.mark.asyncio
async def test_malformed_frames_get_an_error_and_the_node_keeps_serving(spawn, attacker):
    target = spawn("mesh1", "broker")
    node_id, addrs = peer_of(target)
    conn = await attacker.connect(node_id, addrs, ALPN)
    bad_inputs = [
        HEADER.pack(9, 1, 0, 1) + b"x",                # unknown version
        HEADER.pack(VERSION, 0x63, 0, 1) + b"\xc0",   # unknown kind
        HEADER.pack(VERSION, 2, 0, 0xFFFFFFFF),        # declares 4 GiB
        HEADER.pack(VERSION, 2, 0, 3) + b"\xc1\xc1\xc1",  # not msgpack
        frames.encode(Frame(Kind.GOSSIP_PULL, {"topic": b"short", "digests": []})),
        frames.encode(Frame(Kind.GOSSIP_PULL, {"topic": mesh_topic("mesh1"), "digests": "nope"})),
        HEADER.pack(VERSION, 2, 0, 0)[:4],             # truncated header
    ]
    for raw in bad_inputs:
        bi = await conn.open_bi()
        await bi.send().write_all(raw)
        await bi.send().finish()
        reply = await read_one(bi.recv())
        assert reply.kind is Kind.ERROR, raw
        assert reply.body["message"]

    transport_stats = control.request_sync(target.control_path, "status")["transport"]
    assert transport_stats["bad_frames"] == len(bad_inputs)
    # Still serving gossip: a well-formed pull gets the full state back.
    reply = await attacker.request(node_id, addrs, ALPN, to_frame(Pull(mesh_topic("mesh1"), ())))
    assert reply.kind is Kind.GOSSIP_PULL_REPLY
    assert any(digests.decode(raw, lambda *_: True).digest.name == target.name for raw in reply.body["digests"])
    assert target.alive()


@pytest.mark.asyncio
async def test_malformed_or_foreign_indirect_probes_leave_a_gateway_serving(spawn, attacker):
    """The backbone's ping-req and its ack, malformed or from a non-member: an error reply or
    a counter, never a probe on a stranger's behalf, and the gateway keeps serving."""
    gateway = spawn("mesh1", "gateway")
    node_id, addrs = peer_of(gateway)
    for body, error in [({"probe_for": b"short"}, "'probe_for' must be a 32-byte node id"),
                        ({"alive": b"a" * 32, "probe_for": b"a" * 32}, "one of 'probe_for' and 'alive'"),
                        ({"probe_for": node_id.encode()[:32], "digests": [b"record"]}, "one of 'probe_for'")]:
        frame = Frame(Kind.GOSSIP_PUSH, {"topic": BACKBONE_TOPIC, "digests": [], **body})
        reply = await attacker.request(node_id, addrs, ALPN, frame)
        assert reply.kind is Kind.ERROR and error in reply.body["message"], reply
    # Well-formed, but the attacker is no backbone member: ignored and counted.
    target = bytes.fromhex(node_id)
    for message in (ProbeRequest(BACKBONE_TOPIC, target), ProbeAck(BACKBONE_TOPIC, target)):
        await attacker.send(node_id, addrs, ALPN, WIRE.encode(message))

    def backbone_stats() -> dict:
        return control.request_sync(gateway.control_path, "status")["gossip"]["backbone"]

    stats = wait_until(lambda: (s := backbone_stats()).get("unsolicited_acks") and s, 5, "the foreign ack counted")
    assert stats["ignored_probe_requests"] == 1 and stats.get("relayed_probes", 0) == 0
    assert control.request_sync(gateway.control_path, "status")["transport"]["bad_frames"] == 3
    assert gateway.alive()
