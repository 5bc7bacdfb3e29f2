"""What gossip tells the transport of a peer: a new incarnation, a suspicion, a departure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from fabric.identity import Identity
from fabric.transport import Transport

pytestmark = pytest.mark.asyncio
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
