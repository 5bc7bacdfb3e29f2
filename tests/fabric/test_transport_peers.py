"""What gossip tells the transport of a peer: a new incarnation, a suspicion, a departure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from fabric.directory import ChangeKind
from fabric.errors import PeerTimeout, TransportError
from fabric.frames import Frame, Kind
from fabric.identity import Identity
from fabric.transport import Transport

ALPN = b"meshfabric/test-peers/1"


@pytest_asyncio.fixture
async def pair() -> AsyncIterator[tuple[Transport, Transport]]:
    """A server serving ``ALPN`` and a client, on real endpoints."""
    server, client = await Transport.bind(Identity.generate()), await Transport.bind(Identity.generate())
    try:
        server.register(ALPN, lambda remote, frame: None)
        server.apply_alpns()
        server.start_accepting()
        yield server, client
    finally:
        await client.close()
        await server.close()


@pytest.mark.asyncio
async def test_the_same_incarnation_keeps_the_connection_and_a_new_one_drops_it(pair):
    server, client = pair
    first = await client.connect(server.node_id, server.addrs, ALPN)
    client.peer_heard(server.node_id, 1)
    client.peer_heard(server.node_id, 1)
    assert await client.connect(server.node_id, server.addrs, ALPN) is first
    client.peer_heard(server.node_id, 2)  # the peer restarted behind the same id
    second = await client.connect(server.node_id, server.addrs, ALPN)
    assert second is not first
    client.peer_heard(server.node_id, 2, suspect=True)
    assert await client.connect(server.node_id, server.addrs, ALPN) is not second


@pytest.mark.asyncio
async def test_a_peer_gone_is_forgotten_with_its_incarnation(pair):
    server, client = pair
    client.peer_heard(server.node_id, 1)
    first = await client.connect(server.node_id, server.addrs, ALPN)
    client.peer_gone(server.node_id)
    second = await client.connect(server.node_id, server.addrs, ALPN)
    assert second is not first
    # Nothing is remembered of it: heard again (whatever its incarnation), it is a new peer,
    # not a restart, and the connection just made stays.
    client.peer_heard(server.node_id, 7)
    assert await client.connect(server.node_id, server.addrs, ALPN) is second
    client.peer_gone("no-such-peer")  # a peer never heard of: nothing to drop


class _Told:
    """Records what ``Transport.peer_changed`` passes on (the two calls it chooses between)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def peer_gone(self, node_id: str) -> None:
        self.calls.append(("gone", node_id))

    def peer_heard(self, node_id: str, incarnation: int, suspect: bool = False) -> None:
        self.calls.append(("heard", node_id, incarnation, suspect))


@pytest.mark.parametrize("kind, expected", [
    (ChangeKind.JOINED, ("heard", "n", 7, False)), (ChangeKind.CHANGED, ("heard", "n", 7, False)),
    (ChangeKind.RECOVERED, ("heard", "n", 7, False)), (ChangeKind.SUSPECT, ("heard", "n", 7, True)),
    (ChangeKind.REMOVED, ("gone", "n")), (ChangeKind.LEFT, ("gone", "n")),
])
def test_a_change_is_told_as_heard_suspected_or_gone(kind, expected):
    told = _Told()
    Transport.peer_changed(told, "n", 7, kind)  # type: ignore[arg-type]
    assert told.calls == [expected]


@pytest.mark.asyncio
async def test_a_request_that_times_out_says_so_and_drops_what_was_kept_for_the_peer(pair):
    server, client = pair
    hold = asyncio.Event()

    async def never_answers(remote, frame):
        await hold.wait()

    server.register(ALPN, never_answers)
    with pytest.raises(PeerTimeout, match=rf"request to {server.node_id[:6]} timed out after 0.2s") as raised:
        await client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {"n": 1}), timeout=0.2)
    assert raised.value.__suppress_context__  # the timeout's own traceback says nothing more
    assert (server.node_id, ALPN) not in client._connections and (server.node_id, ALPN) not in client._channels
    hold.set()
    server.register(ALPN, lambda remote, frame: _answer(frame))
    reply = await client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {"n": 2}), timeout=5)
    assert reply.body == {"n": 2} and client.stats["frames_out"] == 1  # a new connection, and only it counted


async def _answer(frame: Frame) -> Frame:
    return Frame(Kind.RESPONSE, frame.body)


@pytest.mark.asyncio
async def test_a_send_on_a_broken_stream_fails_as_a_transport_error_and_the_next_one_starts_afresh(pair):
    server, client = pair
    await client.send(server.node_id, server.addrs, ALPN, Frame(Kind.GOSSIP_PUSH, {"n": 1}))
    key = (server.node_id, ALPN)
    broken = client._channels[key]
    broken._outbox.error = ConnectionResetError("reset")  # as a write that failed half-way leaves it
    with pytest.raises(TransportError, match="stream write failed earlier: reset"):
        await client.send(server.node_id, server.addrs, ALPN, Frame(Kind.GOSSIP_PUSH, {"n": 2}))
    assert key not in client._channels and key not in client._connections
    await client.send(server.node_id, server.addrs, ALPN, Frame(Kind.GOSSIP_PUSH, {"n": 3}))
    assert client._channels[key] is not broken
