"""Multiplexed request streams over real iroh endpoints: tags, batching, failures."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from fabric.errors import PeerTimeout, TransportError
from fabric.frames import Frame, Kind
from fabric.identity import Identity
from fabric.transport import Transport

ALPN = b"test/mux/1"


@pytest_asyncio.fixture
async def pair():
    server, client = await Transport.bind(Identity.generate()), await Transport.bind(Identity.generate())
    yield server, client
    await client.close()
    await server.close()


def serve(server: Transport, handler) -> None:
    server.register(ALPN, handler)
    server.apply_alpns()
    server.start_accepting()


@pytest.mark.asyncio
async def test_concurrent_requests_share_one_stream_and_get_their_own_replies(pair):
    server, client = pair
    release = asyncio.Event()

    async def handler(remote, frame):
        if frame.body["n"] == 0:  # the first request answers last
            await release.wait()
        return Frame(Kind.RESPONSE, {"n": frame.body["n"], "from": remote})

    serve(server, handler)
    calls = [asyncio.ensure_future(client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {"n": n})))
             for n in range(20)]
    done, _ = await asyncio.wait(calls[1:], timeout=10)
    assert len(done) == 19 and not calls[0].done()  # replies came back out of order
    release.set()
    replies = await asyncio.gather(*calls)
    assert [r.body["n"] for r in replies] == list(range(20))
    assert {r.body["from"] for r in replies} == {client.node_id}
    assert len(client._channels) == 1


@pytest.mark.asyncio
async def test_a_slow_reply_times_out_and_later_requests_still_work(pair):
    server, client = pair

    async def handler(remote, frame):
        if frame.body.get("stall"):
            await asyncio.Event().wait()
        return Frame(Kind.RESPONSE, {"ok": True})

    serve(server, handler)
    with pytest.raises(PeerTimeout):
        await client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {"stall": True}), timeout=0.3)
    reply = await client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {}), timeout=5)
    assert reply.body == {"ok": True}


@pytest.mark.asyncio
async def test_waiting_callers_fail_fast_when_the_peer_goes_away(pair):
    server, client = pair
    entered = asyncio.Event()

    async def handler(remote, frame):
        entered.set()
        await asyncio.Event().wait()

    serve(server, handler)
    call = asyncio.ensure_future(
        client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {}), timeout=20))
    await asyncio.wait_for(entered.wait(), 5)
    await server.close()  # closes the connection: the channel's reader sees it
    with pytest.raises(TransportError):
        await asyncio.wait_for(call, 10)


@pytest.mark.asyncio
async def test_a_handler_bug_is_an_error_reply_not_a_dead_stream(pair):
    server, client = pair

    async def handler(remote, frame):
        if frame.body.get("boom"):
            raise RuntimeError("bug")
        return Frame(Kind.RESPONSE, {"ok": True})

    serve(server, handler)
    bad = await client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {"boom": True}))
    assert bad.kind is Kind.ERROR and "RuntimeError: bug" in bad.body["message"]
    good = await client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {}))
    assert good.body == {"ok": True}
    assert server.stats["handler_errors"] == 1
