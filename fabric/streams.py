"""Framed, multiplexed iroh streams: many requests share one long-lived bi stream.

Each small write into the bindings costs ~150 µs and each await tens of µs, so opening a
stream per request and writing frame by frame wastes most of a round trip. Here:

* an ``Outbox`` gathers every frame queued while the previous write was in flight and sends
  them in one ``write_all`` (write batching);
* a ``Channel`` is the caller's side: it tags each request, writes it through its outbox and
  matches replies to waiting callers by tag, in whatever order they come back; one-way
  messages (tag ``frames.ONE_WAY``) go on the same stream and wait for nothing;
* ``serve_stream`` is the server's side: it keeps reading (a receiver that stops reading gets
  its connection killed), runs a handler per request concurrently and writes the replies,
  tagged, through an outbox (to a one-way message only if it failed: an ERROR, tag 0, which
  the caller's channel, waiting for nothing, drops).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
from collections import Counter
from typing import Awaitable, Callable

import iroh

from . import frames
from .errors import FrameError, PeerTimeout, TransportError
from .frames import Frame, FrameDecoder, Kind

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
Responder = Callable[[Frame], Awaitable[Frame | None]]
_UNBOUNDED = contextlib.nullcontext()  # a request whose caller bounds it (stateless: shared)


def describe(exc: BaseException) -> str:
    """A readable message for an iroh error (whose ``str()`` is empty)."""
    if isinstance(exc, iroh.IrohError):
        try:
            return f"{exc.kind().name}: {exc.message()}"
        except Exception:  # pragma: no cover - defensive: the bindings' error API varies
            pass
    return str(exc) or type(exc).__name__


def _detached(coro) -> asyncio.Task:  # type: ignore[no-untyped-def]
    """A long-lived task in an empty context: a stream outlives the request that opened it,
    and must not carry that request's trace context (or keep its spans alive)."""
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


async def _let_them_run() -> None:
    """One loop turn, so the tasks a reader just handed frames to run before it asks the
    bindings for the next chunk: that call (Python and FFI before it waits) is then made while
    they wait or once they are done, not before they begin. A channel's reader (the caller's
    side), interleaved clusters, 16 rounds x 400 sequential produces: p50 940 -> 881 µs,
    throughput at 16 in flight 4,707 -> 5,090 records/s (ahead in 10 of 16). The server's
    reader alone gained less (p50 -11 µs: a handler met that read later, in the broker's group
    commit's turn); since the twenty-fourth round that commit takes no turn when no other
    request waits (``Backlog``), so the read comes after the reply."""
    await asyncio.sleep(0)


def error_frame(message: str, code: str = "bad_request", tag: int = 0) -> Frame:
    return Frame(Kind.ERROR, {"code": code, "message": message}, tag)


class Outbox:
    """Writes queued bytes to a send stream, batching whatever piles up meanwhile.

    ``write_alone`` is for a caller with nothing else in flight: it writes from its own task
    (one loop turn less than a hand-off to the outbox's task); under load everything goes
    through the queue, so concurrent frames still share one write into the bindings. ``write``
    returns only once its bytes are written (alone or in the batch they joined): for a caller
    that waits for no reply, so a stream that stopped moving holds it, and its timeout, instead
    of piling bytes up behind it.
    """

    def __init__(self, send: iroh.SendStream) -> None:
        self._send = send
        self._queue: list[bytes] = []
        self._written: list[asyncio.Future[None]] = []  # ``write`` callers whose bytes are queued
        self._wake = asyncio.Event()
        self._closing = False
        self._busy = False  # a write_all is in flight (the task's or a caller's)
        self.error: BaseException | None = None
        self._task = _detached(self._run())

    @property
    def _idle(self) -> bool:
        """Nothing in flight or queued, not closing, not failed: a write may go out now."""
        return not (self._busy or self._queue or self._closing or self.error is not None)

    async def write_alone(self, data: bytes) -> None:
        """Write ``data`` now if the stream is idle, else queue it. A write cancelled half-way
        may leave part of a frame on the stream: the outbox is failed (``error``) then."""
        if not self._idle:
            return self.put(data)
        self._busy = True
        try:
            await self._send.write_all(data)
        except iroh.IrohError as exc:
            self.error = exc
            raise TransportError(f"stream write failed: {describe(exc)}") from None
        except asyncio.CancelledError:
            self.error = TransportError("a write was cancelled half-way")
            raise
        finally:
            self._busy = False
            if self._queue or self._closing:
                self._wake.set()

    async def write(self, data: bytes) -> None:
        """Write ``data``; return once it is written (see the class docstring)."""
        if self._idle:
            return await self.write_alone(data)
        written = asyncio.get_running_loop().create_future()
        self.put(data)
        self._written.append(written)
        await written

    def put(self, data: bytes) -> None:
        if self.error is not None:
            raise TransportError(f"stream write failed earlier: {describe(self.error)}")
        self._queue.append(data)
        self._wake.set()

    async def close(self) -> None:
        """Flush what is queued, then finish the stream."""
        self._closing = True
        self._wake.set()
        await asyncio.shield(self._task)

    def abort(self) -> None:
        self._task.cancel()
        self._settle_queued(TransportError("the stream was closed"))

    def _settle_queued(self, error: BaseException | None) -> None:
        _settle(self._written, error)
        self._written = []

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._busy:
                    continue  # a caller is writing; it wakes us when it is done
                while self._queue and self.error is None:
                    batch, self._queue = b"".join(self._queue), []
                    written, self._written = self._written, []
                    self._busy = True
                    try:
                        await self._send.write_all(batch)
                    except BaseException as exc:
                        _settle(written, TransportError(f"stream write failed: {describe(exc)}"))
                        raise
                    finally:
                        self._busy = False
                    _settle(written, None)
                if self.error is not None:  # a caller's write failed: what is queued never will be
                    self._settle_queued(TransportError(f"stream write failed earlier: {describe(self.error)}"))
                if self._closing:
                    if self.error is None:
                        await self._send.finish()
                    return
        except iroh.IrohError as exc:
            self.error = exc
            self._settle_queued(TransportError(f"stream write failed: {describe(exc)}"))


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """Tell ``Outbox.write`` callers their bytes are written (``error`` None) or never will be."""
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class Channel:
    """The calling side of one long-lived bi stream to a peer."""

    def __init__(self, bi: iroh.BiStream, max_frame: int, on_close: Callable[["Channel"], None]) -> None:
        self._recv = bi.recv()
        self._outbox = Outbox(bi.send())
        self._max_frame = max_frame
        self._on_close = on_close
        self._tags = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Frame]] = {}
        self.closed = False
        self._reader = _detached(self._read())

    async def call(self, frame: Frame, timeout: float) -> Frame:
        """Send ``frame`` and wait (bounded) for the reply with the same tag."""
        return await self.call_encoded(frames.encode(frame, self._max_frame), timeout)

    async def call_encoded(self, data: bytes, timeout: float | None) -> Frame:
        """``call`` for a frame encoded already (its tag is replaced by the channel's own);
        ``timeout=None``: the caller bounds it (a second timer per request costs a few µs)."""
        if self.closed:
            raise TransportError("channel is closed")
        tag = next(self._tags) & 0xFFFFFFFF or next(self._tags)  # never ONE_WAY (0)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting[tag] = future
        tagged = frames.retag(data, tag)
        try:
            # unarmed, asyncio.timeout's context still costs ~2 µs a request (nullcontext: ~0.4)
            async with asyncio.timeout(timeout) if timeout is not None else _UNBOUNDED:
                if len(self._waiting) == 1:  # alone on the stream: written from this task
                    await self._outbox.write_alone(tagged)
                else:
                    self._outbox.put(tagged)
                return await future
        except TimeoutError:
            raise PeerTimeout(f"no reply within {timeout:g}s") from None
        finally:
            self._waiting.pop(tag, None)
            self._close_if_broken()

    async def send_encoded(self, data: bytes) -> None:
        """Send a frame encoded already, one-way (tagged ``ONE_WAY``: the server answers
        nothing), alone or in a batch with whatever else is being written; it returns once the
        bytes are with the stream (not when the peer has them), like a write."""
        if self.closed:
            raise TransportError("channel is closed")
        try:
            await self._outbox.write(frames.retag(data, frames.ONE_WAY))
        finally:
            self._close_if_broken()

    def _close_if_broken(self) -> None:
        if self._outbox.error is not None and not self.closed:
            self.close()  # a write failed (maybe half-way): the stream is out of sync

    def close(self) -> None:
        self._fail(TransportError("channel closed"))
        self._outbox.abort()
        self._reader.cancel()

    async def _read(self) -> None:
        decoder = FrameDecoder(self._max_frame)
        error: BaseException = TransportError("the peer closed the stream")
        try:
            while chunk := await self._recv.read(READ_CHUNK):
                for reply in decoder.feed(chunk):
                    future = self._waiting.get(reply.tag)
                    if future is not None and not future.done():
                        future.set_result(reply)
                await _let_them_run()
        except (iroh.IrohError, FrameError) as exc:
            error = TransportError(f"stream broke: {describe(exc)}")
        finally:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._on_close(self)


async def read_one(recv: iroh.RecvStream, max_frame: int = frames.DEFAULT_MAX_FRAME) -> Frame:
    """Read exactly one frame and then the end of ``recv`` (a one-shot reply stream: how a
    peer answers a request sent on a stream of its own, then finished)."""
    decoder = FrameDecoder(max_frame)
    got: list[Frame] = []
    try:
        while chunk := await recv.read(READ_CHUNK):
            got += decoder.feed(chunk)
    except iroh.IrohError as exc:
        raise TransportError(f"stream read failed: {describe(exc)}") from exc
    if decoder.pending or len(got) != 1:
        raise FrameError(f"expected one whole frame, got {len(got)} and {decoder.pending} stray bytes")
    return got[0]


class Backlog:
    """How many requests read off a transport's streams wait for their handler to start:
    work that could take them along can wait a loop turn for them (the broker's group commit),
    and need not when there are none. (A handler's task cancelled before it starts would leave
    the count high: such work then waits its turn, as it always did.)"""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting = 0


async def serve_stream(recv: iroh.RecvStream, send: iroh.SendStream | None, respond: Responder,
                       max_frame: int, stats: Counter[str], backlog: Backlog | None = None) -> None:
    """Answer every request frame read from ``recv`` (on ``send``, if it is a bi stream),
    each in a task of its own (counted in ``backlog`` until it starts).

    After a chunk's requests are handed to their tasks, the reader lets them start before it
    asks the bindings for the next chunk: that call (~15 µs of Python and FFI in a node) is then
    made while the handlers wait (on the disk, on a peer) or once they are done, not before
    they begin (docs/performance-rounds.md, twenty-fourth round)."""
    outbox = Outbox(send) if send is not None else None
    decoder = FrameDecoder(max_frame)
    running: set[asyncio.Task] = set()
    backlog = backlog or Backlog()

    async def answer(frame: Frame) -> None:
        backlog.waiting -= 1
        reply = await respond(frame)
        failed = reply is not None and reply.kind is Kind.ERROR
        if outbox is None or (frame.tag == frames.ONE_WAY and not failed):
            return  # nowhere to answer, or a one-way message that went fine (a failure is still said)
        reply = reply or Frame(Kind.RESPONSE)
        data = frames.encode(Frame(reply.kind, reply.body, frame.tag), max_frame)
        if len(running) == 1:  # the only request in flight: written from this task
            await outbox.write_alone(data)
        else:
            outbox.put(data)

    try:
        while chunk := await recv.read(READ_CHUNK):
            for frame in decoder.feed(chunk):
                task = asyncio.ensure_future(answer(frame))
                backlog.waiting += 1
                running.add(task)
                task.add_done_callback(running.discard)
            await _let_them_run()
        if decoder.pending:
            raise FrameError(f"stream ended inside a frame ({decoder.pending} bytes left over)")
    except FrameError as exc:  # the stream is out of sync: answer once, stop reading
        stats["bad_frames"] += 1
        if outbox is not None:
            outbox.put(frames.encode(error_frame(str(exc), "bad_frame"), max_frame))
    except iroh.IrohError as exc:
        stats["broken_streams"] += 1
        log.debug("stream broke: %s", describe(exc))
    if running:
        await asyncio.gather(*running, return_exceptions=True)
    if outbox is not None:
        await outbox.close()
