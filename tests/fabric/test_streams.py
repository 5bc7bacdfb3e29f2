"""Multiplexed request streams over real iroh endpoints: tags, batching, failures."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import pytest_asyncio

from fabric import frames
from fabric.errors import FrameError, PeerTimeout, TransportError
from fabric.frames import Frame, FrameDecoder, Kind
from fabric.identity import Identity
from fabric.streams import Outbox
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


async def first_frames(recv) -> list[Frame]:
    """The whole frames of the first read(s) that yield any, each read bounded by 5 s."""
    decoder = FrameDecoder(frames.DEFAULT_MAX_FRAME)
    got: list[Frame] = []
    while not got:
        got += decoder.feed(await asyncio.wait_for(recv.read(65536), 5))
    return got


@pytest.mark.asyncio
async def test_one_way_sends_share_the_request_stream_in_order(pair):
    server, client = pair
    pushed: list[int] = []

    async def handler(remote, frame):
        if frame.kind is Kind.GOSSIP_PUSH:
            pushed.append(frame.body["n"])
            return None
        return Frame(Kind.RESPONSE, {"pushed": list(pushed)})

    serve(server, handler)
    for n in range(20):
        await client.send(server.node_id, server.addrs, ALPN, Frame(Kind.GOSSIP_PUSH, {"n": n}))
    reply = await client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {}))
    assert reply.body["pushed"] == list(range(20))  # all there, in order, before the request behind them
    assert server.stats["streams_in"] == 1  # one stream for all 21 frames, none opened per send
    assert client.stats["frames_out"] == 21


@pytest.mark.asyncio
async def test_the_server_answers_nothing_to_a_one_way_frame(pair):
    server, client = pair

    async def handler(remote, frame):
        return Frame(Kind.RESPONSE, {"n": frame.body["n"]})  # would answer anything it is asked to

    serve(server, handler)
    conn = await client.connect(server.node_id, server.addrs, ALPN)
    bi = await conn.open_bi()
    send, recv = bi.send(), bi.recv()
    await send.write_all(frames.encode(Frame(Kind.REQUEST, {"n": 1}, frames.ONE_WAY))
                         + frames.encode(Frame(Kind.REQUEST, {"n": 2}, 7)))
    got = await first_frames(recv)
    assert [(f.tag, f.body) for f in got] == [(7, {"n": 2})]  # the one-way frame's answer was never written


@pytest.mark.asyncio
async def test_a_one_way_frame_that_fails_is_still_answered_with_its_error(pair):
    server, client = pair

    async def handler(remote, frame):
        if frame.body.get("bad"):
            raise FrameError("no such thing")

    serve(server, handler)
    conn = await client.connect(server.node_id, server.addrs, ALPN)
    bi = await conn.open_bi()
    await bi.send().write_all(frames.encode(Frame(Kind.GOSSIP_PUSH, {"bad": False}, frames.ONE_WAY))
                              + frames.encode(Frame(Kind.GOSSIP_PUSH, {"bad": True}, frames.ONE_WAY)))
    got = await first_frames(bi.recv())
    assert len(got) == 1 and got[0].kind is Kind.ERROR and "no such thing" in got[0].body["message"]
    # The caller's own channel drops such an answer (nothing waits on tag 0) and keeps working.
    await client.send(server.node_id, server.addrs, ALPN, Frame(Kind.GOSSIP_PUSH, {"bad": True}))
    assert (await client.request(server.node_id, server.addrs, ALPN, Frame(Kind.GOSSIP_PUSH, {}))).kind is Kind.RESPONSE
    assert server.stats["bad_frames"] == 2


class StuckSendStream:
    """A send stream whose writes finish only when the test says so (a peer that stopped reading)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.release = asyncio.Event()

    async def write_all(self, data: bytes) -> None:
        await self.release.wait()
        self.written.append(data)

    async def finish(self) -> None:
        pass


@pytest.mark.asyncio
async def test_a_write_returns_only_once_its_bytes_are_written():
    stream = StuckSendStream()
    outbox = Outbox(stream)  # type: ignore[arg-type]
    first = asyncio.ensure_future(outbox.write(b"a"))
    await asyncio.sleep(0)  # the first is in write_all, stuck
    later = [asyncio.ensure_future(outbox.write(data)) for data in (b"b", b"c")]
    with pytest.raises(TimeoutError):  # a stuck stream holds its writers (and their timeouts)
        await asyncio.wait_for(asyncio.shield(later[0]), 0.05)
    assert not first.done() and not any(w.done() for w in later)
    stream.release.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 5)
    assert stream.written == [b"a", b"bc"]  # the two queued behind it went in one write


@pytest.mark.asyncio
async def test_queued_writers_hear_of_an_abort():
    outbox = Outbox(StuckSendStream())  # type: ignore[arg-type]
    first = asyncio.ensure_future(outbox.write(b"a"))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(outbox.write(b"b"))
    await asyncio.sleep(0)
    outbox.abort()
    with pytest.raises(TransportError, match="closed"):
        await asyncio.wait_for(queued, 5)
    first.cancel()


class ScriptedBiStream:
    """A bi stream whose reads give the replies the test queues, and record whether the caller
    had already seen its reply when the channel's reader asked for more."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.reads_after_reply: list[bool] = []
        self.caller_saw_reply = False
        self.given = 0

    def recv(self) -> ScriptedBiStream:
        return self

    def send(self) -> ScriptedBiStream:
        return self

    async def read(self, size: int) -> bytes:
        if self.given:  # the read after the reply's chunk
            self.reads_after_reply.append(self.caller_saw_reply)
        chunk = await self.chunks.get()
        self.given += 1
        return chunk

    async def write_all(self, data: bytes) -> None:
        self.sent.append(data)
        (request,) = FrameDecoder(frames.DEFAULT_MAX_FRAME).feed(data)
        self.chunks.put_nowait(frames.encode(Frame(Kind.RESPONSE, {"ok": 1}, request.tag)))

    async def finish(self) -> None:
        pass


@pytest.mark.asyncio
async def test_a_caller_sees_its_reply_before_the_reader_asks_for_the_next_chunk():
    """The reader's next read (a call into the bindings) must not stand between a reply and
    the caller waiting for it."""
    from fabric.streams import Channel

    stream = ScriptedBiStream()
    channel = Channel(stream, frames.DEFAULT_MAX_FRAME, lambda _: None)  # type: ignore[arg-type]
    reply = await channel.call(Frame(Kind.REQUEST, {"op": "x"}), timeout=5)
    stream.caller_saw_reply = True
    assert reply.body == {"ok": 1}
    await asyncio.wait_for(_until(lambda: stream.reads_after_reply), 5)
    assert stream.reads_after_reply == [True]
    channel.close()


async def _until(condition) -> None:  # type: ignore[no-untyped-def]
    while not condition():
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_the_server_counts_the_requests_read_whose_handlers_have_not_started(pair):
    server, client = pair
    seen: list[int] = []

    async def handler(remote, frame):
        seen.append(server.requests_waiting)  # a chunk's k requests start with k-1, ..., 0 left
        return Frame(Kind.RESPONSE, {})

    serve(server, handler)
    await asyncio.gather(*(client.request(server.node_id, server.addrs, ALPN, Frame(Kind.REQUEST, {"n": n}))
                           for n in range(20)))
    assert len(seen) == 20 and seen[-1] == 0 and server.requests_waiting == 0
    assert all(later == earlier - 1 or earlier == 0 for earlier, later in itertools.pairwise(seen))
    assert max(seen) > 0  # the writes batched: some chunk held several requests
