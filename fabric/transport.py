"""The iroh endpoint adapter: bind, ALPN routing, bounded connects and framed streams.

Every node-to-node byte travels here, on QUIC authenticated by the node keys. Relays and
discovery are off: peers reach each other by the direct addresses they gossip.

Each protocol registers one ALPN and a handler ``handler(remote_id, frame) -> Frame | None``.
Two ways to call a peer:

* ``request``: a tagged frame on the long-lived, multiplexed bi stream kept per peer and
  ALPN (see ``streams.py``); the reply carries the same tag.
* ``send``: one frame, one-way (gossip pushes), on the same stream, tagged ``ONE_WAY`` so the
  peer answers nothing: no stream opened and finished per message. Frames arriving on uni
  streams (how ``send`` used to travel, and how older nodes still send) are served too.

A bad frame or a failing handler is counted and answered with an ERROR frame where a reply
is expected; it never takes the node down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Awaitable, Callable

import iroh

from . import frames, iroh_patch
from .dials import Dials
from .directory import GONE, ChangeKind
from .errors import FrameError, PeerTimeout, TransportError
from .frames import Frame, FrameDecoder, Kind
from .identity import Identity
from .streams import Backlog, Channel, describe, error_frame, serve_stream

__all__ = ["Handler", "Transport", "describe", "error_frame"]

log = logging.getLogger(__name__)
iroh_patch.apply()

Handler = Callable[[str, Frame], Awaitable[Frame | None]]

DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_REQUEST_TIMEOUT = 5.0
CLOSE_DRAIN_TIMEOUT = 0.3  # at most this for peers to see our close (see Transport.close)


class _ClosedEndpoint:
    """Stands in for a closed endpoint: every use fails like a closed iroh endpoint would."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        raise TransportError("the transport is closed")


_CLOSED: iroh.Endpoint = _ClosedEndpoint()  # type: ignore[assignment]


def _close(conn: iroh.Connection) -> None:
    """Close a connection we no longer use; one the peer closed already may refuse, which is fine."""
    try:
        conn.close(0, b"")
    except iroh.IrohError:
        pass


class Transport:
    """One iroh endpoint with ALPN routing, cached connections and multiplexed channels."""

    def __init__(self, endpoint: iroh.Endpoint, max_frame: int = frames.DEFAULT_MAX_FRAME,
                 node_id: str | None = None) -> None:
        self.endpoint = endpoint
        self.max_frame = max_frame
        self.node_id = node_id or str(endpoint.id())  # the key's id, if the caller has it (~20-40 µs)
        self.stats: Counter[str] = Counter()
        self._handlers: dict[bytes, Handler] = {}
        self._connections: dict[tuple[str, bytes], iroh.Connection] = {}
        self._channels: dict[tuple[str, bytes], Channel] = {}
        self._dialled: dict[tuple[str, bytes], frozenset[str]] = {}
        self._incarnations: dict[str, int] = {}  # peer id -> the incarnation gossip last reported
        self._locks: dict[tuple[str, bytes], asyncio.Lock] = {}  # one channel opened per peer and ALPN
        self._dials: Dials[iroh.Connection] = Dials()
        self._tasks: set[asyncio.Task] = set()
        self._accept_task: asyncio.Task | None = None
        self._addrs: list[str] | None = None
        self._alpns: list[bytes] | None = None  # what the endpoint was told to accept
        self._backlog = Backlog()

    @classmethod
    async def bind(cls, identity: Identity, bind_addr: str = "127.0.0.1:0",
                   max_frame: int = frames.DEFAULT_MAX_FRAME, alpns: list[bytes] | None = None) -> "Transport":
        """Bind an endpoint with ``identity``'s key, no relay and no discovery.

        ``alpns`` known before the bind are accepted from the start (no extra bindings call:
        ``apply_alpns`` then only checks that the registered handlers match).
        """
        accepted = sorted(alpns) if alpns else None
        options = iroh.EndpointOptions(preset=iroh.preset_minimal(), bind_addr=bind_addr,
                                       secret_key=identity.secret_key, alpns=accepted)
        try:
            endpoint = await iroh.Endpoint.bind(options)
        except iroh.IrohError as exc:
            raise TransportError(f"cannot bind an iroh endpoint on {bind_addr}: {describe(exc)}") from exc
        identity.adopt(endpoint)
        transport = cls(endpoint, max_frame, identity.node_id)
        transport._alpns = accepted
        return transport

    @property
    def addrs(self) -> list[str]:
        """The direct addresses peers can reach this endpoint at (read once: ~100 µs a read)."""
        if self._addrs is None:
            self._addrs = list(self.endpoint.addr().direct_addresses())
        return list(self._addrs)

    # -- serving ---------------------------------------------------------------

    def register(self, alpn: bytes, handler: Handler) -> None:
        """Route connections negotiated with ``alpn`` to ``handler``."""
        self._handlers[alpn] = handler

    def apply_alpns(self) -> list[bytes]:
        """Tell the endpoint which ALPNs to accept (every registered one), unless it already does."""
        alpns = sorted(self._handlers)
        if alpns != self._alpns:
            self.endpoint.set_alpns(alpns)
            self._alpns = alpns
        return alpns

    def start_accepting(self) -> None:
        """Start the accept loop in the background."""
        self._accept_task = asyncio.create_task(self._accept_loop(), name="iroh-accept")

    async def _accept_loop(self) -> None:
        while True:
            incoming = await self.endpoint.accept_next()
            if incoming is None:
                return  # endpoint closed
            self._spawn(self._accept_one(incoming))

    async def _accept_one(self, incoming: iroh.Incoming) -> None:
        try:
            accepting = await incoming.accept()
            alpn = await accepting.alpn()
            conn = await accepting.connect()
        except iroh.IrohError as exc:
            self.stats["handshake_failed"] += 1
            log.debug("incoming handshake failed: %s", describe(exc))
            return
        handler = self._handlers.get(alpn)
        if handler is None:
            self.stats["unknown_alpn"] += 1
            conn.close(1, b"unknown alpn")
            return
        respond = self._responder(handler, str(conn.remote_id()))
        self._spawn(self._serve(conn.accept_uni, respond, bi=False))
        await self._serve(conn.accept_bi, respond, bi=True)

    async def _serve(self, accept: Callable[[], Awaitable], respond, bi: bool) -> None:
        while True:
            try:
                stream = await accept()
            except iroh.IrohError:
                return  # connection closed
            recv, send = (stream.recv(), stream.send()) if bi else (stream, None)
            self.stats["streams_in"] += 1
            self._spawn(serve_stream(recv, send, respond, self.max_frame, self.stats, self._backlog))

    def _responder(self, handler: Handler, remote: str) -> Callable[[Frame], Awaitable[Frame | None]]:
        async def respond(frame: Frame) -> Frame | None:
            self.stats["frames_in"] += 1
            try:
                return await handler(remote, frame)
            except FrameError as exc:
                self.stats["bad_frames"] += 1
                return error_frame(str(exc), "bad_frame")
            except Exception as exc:  # a handler bug must not kill the node: count, log, answer
                self.stats["handler_errors"] += 1
                log.exception("handler failed on a frame from %s", remote[:6])
                return error_frame(f"internal error: {type(exc).__name__}: {exc}", "internal")
        return respond

    @property
    def requests_waiting(self) -> int:
        """Requests read off this endpoint's streams whose handlers have not started yet."""
        return self._backlog.waiting

    # -- calling ---------------------------------------------------------------

    async def connect(self, node_id: str, addrs: list[str] | tuple[str, ...], alpn: bytes,
                      timeout: float = DEFAULT_CONNECT_TIMEOUT) -> iroh.Connection:
        """A (cached) connection to ``node_id`` for ``alpn``, bounded by ``timeout``.

        A connection is cached with the addresses it was dialled at: a peer that comes back
        at other addresses (a restart binds a new port) is a new process, and the old QUIC
        connection would swallow writes into the void until its idle timeout, so it is
        dropped and the new addresses dialled.
        """
        key = (node_id, alpn)
        self._forget_if_moved(key, addrs)
        if (conn := self._connections.get(key)) is not None:
            return conn
        try:
            async with asyncio.timeout(timeout):
                return await self._dials.join((key, frozenset(addrs)), lambda: self._dial(key, addrs))
        except TimeoutError:
            self.stats["connect_timeouts"] += 1
            raise PeerTimeout(f"connect to {node_id[:6]} at {list(addrs)} timed out after {timeout:.3g}s") from None
        except iroh.IrohError as exc:
            self.stats["connect_failed"] += 1
            raise TransportError(f"connect to {node_id[:6]} at {list(addrs)} failed: {describe(exc)}") from exc

    async def _dial(self, key: tuple[str, bytes], addrs: list[str] | tuple[str, ...]) -> iroh.Connection:
        """One dial (shared by the callers of ``connect`` while it is young, see ``dials.py``);
        the first to connect is cached, a later one closes its own and answers with it."""
        node_id, alpn = key
        peer = iroh.EndpointAddr(iroh.EndpointId.from_string(node_id), None, list(addrs))
        conn = await self.endpoint.connect(peer, alpn)
        if (first := self._connections.get(key)) is not None:
            self.stats["dials_superseded"] += 1
            _close(conn)
            return first
        self._connections[key] = conn
        self._dialled[key] = frozenset(addrs)
        return conn

    def _forget_if_moved(self, key: tuple[str, bytes], addrs: list[str] | tuple[str, ...]) -> None:
        dialled = self._dialled.get(key)
        if dialled is not None and addrs and frozenset(addrs) != dialled:
            self.stats["peer_moved"] += 1
            self.forget(*key)

    def _open_channel(self, key: tuple[str, bytes], addrs) -> Channel | None:
        """The channel kept for ``key`` if it is open (and the peer has not moved), else None:
        most calls find one, and need not make a coroutine to ask."""
        self._forget_if_moved(key, addrs)
        channel = self._channels.get(key)
        return channel if channel is not None and not channel.closed else None

    async def _channel(self, node_id: str, addrs, alpn: bytes, timeout: float) -> Channel:
        """A channel for a peer with none open (callers ask ``_open_channel`` first): dialled,
        or the one another caller opened while this one waited for the connection."""
        key = (node_id, alpn)
        conn = await self.connect(node_id, addrs, alpn, timeout)
        async with self._locks.setdefault(key, asyncio.Lock()):
            channel = self._channels.get(key)
            if channel is None or channel.closed:
                bi = await conn.open_bi()
                channel = Channel(bi, self.max_frame, lambda ch, key=key: self._drop_channel(key, ch))
                self._channels[key] = channel
            return channel

    def _drop_channel(self, key: tuple[str, bytes], channel: Channel) -> None:
        if self._channels.get(key) is channel:
            del self._channels[key]

    def forget(self, node_id: str, alpn: bytes) -> None:
        """Drop the cached connection and channel to a peer (after they failed)."""
        channel = self._channels.pop((node_id, alpn), None)
        if channel is not None:
            channel.close()
        self._dialled.pop((node_id, alpn), None)
        conn = self._connections.pop((node_id, alpn), None)
        if conn is not None:
            _close(conn)

    def forget_peer(self, node_id: str) -> None:
        """Drop every cached connection and channel to ``node_id`` (it restarted)."""
        for key in {k for k in (*self._connections, *self._channels) if k[0] == node_id}:
            self.forget(*key)

    def peer_heard(self, node_id: str, incarnation: int, suspect: bool = False) -> None:
        """What gossip (a mesh's directory, the backbone's member table) says of a peer. A new
        incarnation (a new process behind the same id) or a suspicion drops the cached
        connection to it: a process restarted at the same address does not reset the old QUIC
        connection, which would swallow writes until its 30 s idle timeout, so the next call
        dials afresh."""
        known = self._incarnations.get(node_id)
        self._incarnations[node_id] = incarnation
        if suspect or (known is not None and known != incarnation):
            self.forget_peer(node_id)

    def peer_gone(self, node_id: str) -> None:
        """Gossip gave up on a peer (removed, or it left): drop what was kept for it, the
        incarnation last heard included (a long-lived node sees many peers come and go)."""
        self._incarnations.pop(node_id, None)
        self.forget_peer(node_id)

    def peer_changed(self, node_id: str, incarnation: int, kind: ChangeKind) -> None:
        """A change gossip made to a peer (a mesh's directory, the backbone's member table):
        ``peer_gone`` once it is no longer listed, else ``peer_heard``."""
        if kind in GONE:
            self.peer_gone(node_id)
        else:
            self.peer_heard(node_id, incarnation, kind is ChangeKind.SUSPECT)

    async def request(self, node_id: str, addrs: list[str] | tuple[str, ...], alpn: bytes,
                      frame: Frame, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Frame:
        """Send one request and return the peer's reply, within ``timeout`` overall.

        A request to this endpoint itself (iroh cannot connect to itself) goes straight to the
        local handler, through the same encoding, so callers need not care who serves it.
        """
        data = frames.encode(frame, self.max_frame)  # size check before any I/O
        if node_id == self.node_id:
            return await self._request_self(alpn, data)
        try:
            async with asyncio.timeout(timeout):  # not wait_for: no task (and loop hop) per call
                channel = (self._open_channel((node_id, alpn), addrs)
                           or await self._channel(node_id, addrs, alpn, timeout))
                reply = await channel.call_encoded(data, None)  # bounded here
        except (TimeoutError, iroh.IrohError, TransportError) as exc:
            raise self._failed(exc, node_id, alpn, timeout, "request")  # _failed sets its cause
        self.stats["frames_out"] += 1
        return reply

    async def send(self, node_id: str, addrs: list[str] | tuple[str, ...], alpn: bytes,
                   frame: Frame, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        """Send one frame one-way, on the peer's long-lived stream for ``alpn``; returns once
        it is written (alone, or in the batch it joined behind a write in flight), not when
        the peer has it."""
        data = frames.encode(frame, self.max_frame)
        try:
            async with asyncio.timeout(timeout):
                channel = (self._open_channel((node_id, alpn), addrs)
                           or await self._channel(node_id, addrs, alpn, timeout))
                await channel.send_encoded(data)
        except (TimeoutError, iroh.IrohError, TransportError) as exc:
            raise self._failed(exc, node_id, alpn, timeout, "send")  # _failed sets its cause
        self.stats["frames_out"] += 1

    async def _request_self(self, alpn: bytes, data: bytes) -> Frame:
        handler = self._handlers.get(alpn)
        if handler is None:
            raise TransportError(f"this node does not serve {alpn.decode(errors='replace')}")
        respond = self._responder(handler, self.node_id)
        (frame,) = FrameDecoder(self.max_frame).feed(data)
        reply = await respond(frame) or Frame(Kind.RESPONSE)
        (decoded,) = FrameDecoder(self.max_frame).feed(frames.encode(reply, self.max_frame))
        return decoded

    def _failed(self, exc: BaseException, node_id: str, alpn: bytes, timeout: float, what: str) -> BaseException:
        """What a call to a peer that failed with ``exc`` raises, once the connection kept for
        it is dropped (written out in ``request`` and ``send`` rather than wrapped around
        them: a coroutine less a call)."""
        self.forget(node_id, alpn)
        if isinstance(exc, TimeoutError):
            failure: BaseException = PeerTimeout(f"{what} to {node_id[:6]} timed out after {timeout:.3g}s")
            failure.__suppress_context__ = True  # as ``raise ... from None``
            return failure
        if isinstance(exc, iroh.IrohError):
            failure = TransportError(f"{what} to {node_id[:6]} failed: {describe(exc)}")
            failure.__cause__ = exc  # as ``raise ... from exc``
            return failure
        return exc  # a TransportError says what failed already

    # -- lifecycle -------------------------------------------------------------

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close every channel, connection and the endpoint, then stop accepting.

        The bindings release the socket only with the last reference to the endpoint, and a
        cancelled ``accept_next`` keeps one: the accept loop is left to see the endpoint close
        (``None``) and our reference is dropped, so a node restarted in this process gets its
        port back instead of binding twice.
        """
        if self.endpoint is _CLOSED:
            return
        for task in list(self._tasks):
            task.cancel()
        for key in list(self._connections) + list(self._channels):
            self.forget(*key)
        try:
            # Closing waits until every peer has seen the close (or ~3 PTOs): milliseconds when
            # peers answer, seconds when one is partitioned off (its PTO backed off). No data
            # waits on it (a closed connection drops unsent stream data), so keep it short.
            await asyncio.wait_for(self.endpoint.close(), CLOSE_DRAIN_TIMEOUT)
        except (asyncio.TimeoutError, iroh.IrohError):
            pass
        if self._accept_task is not None:
            try:
                await asyncio.wait_for(self._accept_task, 0.5)
            except (asyncio.TimeoutError, asyncio.CancelledError, iroh.IrohError, TransportError):
                pass
        self.endpoint = _CLOSED
