"""Forged digests and malformed frames sent to a real node: dropped, counted, node unharmed."""

from __future__ import annotations

import pytest
import pytest_asyncio

from fabric import control, frames
from fabric.frames import HEADER, VERSION
from fabric.frames import Frame, Kind
from fabric.gossip import digest as digests
from fabric.gossip.net import ALPN, to_frame
from fabric.gossip.proto import Pull, Push, mesh_topic
from fabric.identity import Identity
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
        reply = await attacker.read_one(bi.recv())
        assert reply.kind is Kind.ERROR, raw
        assert reply.body["message"]

    transport_stats = control.request_sync(target.control_path, "status")["transport"]
    assert transport_stats["bad_frames"] == len(bad_inputs)
    # Still serving gossip: a well-formed pull gets the full state back.
    reply = await attacker.request(node_id, addrs, ALPN, to_frame(Pull(mesh_topic("mesh1"), ())))
    assert reply.kind is Kind.GOSSIP_PULL_REPLY
    assert any(digests.decode(raw, lambda *_: True).digest.name == target.name for raw in reply.body["digests"])
    assert target.alive()
