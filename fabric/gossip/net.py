"""Runs gossip cores over the transport: the ticker, the wire format, the ALPN handler.

Pushes go one-way (``Transport.send``: on the peer's long-lived stream, no reply); pulls are
requests whose reply is the full state. A send to a peer that is still busy with the previous
one of its kind (one-way or request) is skipped (counted), so a dead or paused peer never piles
up work: the protocol's own retries (the next tick) cover it. A core may bring its own message
format (``core.wire``: the backbone does); mesh cores use ``MESH_WIRE``. Frames and bytes in
and out are counted in each core's ``stats``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Callable

from ..errors import FabricError, FrameError
from ..frames import Frame, Kind, encode
from ..transport import Transport
from .proto import GossipCore, Message, Pull, PullReply, Push, Send

log = logging.getLogger(__name__)

ALPN = b"meshfabric/gossip/1"

_KINDS: dict[type, Kind] = {Push: Kind.GOSSIP_PUSH, Pull: Kind.GOSSIP_PULL, PullReply: Kind.GOSSIP_PULL_REPLY}
_TYPES = {kind: cls for cls, kind in _KINDS.items()}


def to_frame(message: Message) -> Frame:
    return Frame(_KINDS[type(message)], {"topic": message.topic, "digests": list(message.digests)})


def from_frame(frame: Frame) -> Message:
    """The gossip message in ``frame``, or ``FrameError`` if it is not one."""
    cls = _TYPES.get(frame.kind)
    if cls is None:
        raise FrameError(f"{frame.kind.name} is not a gossip frame")
    topic, digests = frame.body.get("topic"), frame.body.get("digests")
    if not isinstance(topic, bytes) or len(topic) != 32:
        raise FrameError("gossip frame needs a 32-byte 'topic'")
    if not isinstance(digests, list) or not all(isinstance(d, bytes) for d in digests):
        raise FrameError("gossip frame needs 'digests', a list of byte strings")
    return cls(topic, tuple(digests))


class MeshWire:
    """The mesh cores' messages as frames: ``{topic, digests}``."""

    encode = staticmethod(to_frame)
    decode = staticmethod(from_frame)

    @staticmethod
    def is_request(message: Message) -> bool:
        return isinstance(message, Pull)


MESH_WIRE = MeshWire()


def _wire(core: GossipCore):
    return getattr(core, "wire", MESH_WIRE)


def _urgent(core: GossipCore) -> list[Send]:
    """What ``core.handle`` left to send at once (the backbone's indirect probes), if anything."""
    take = getattr(core, "take_urgent", None)
    return take() if take is not None else []


def _count(core: GossipCore, frame: Frame, direction: str) -> None:
    core.stats[f"wire_frames_{direction}"] += 1
    core.stats[f"wire_bytes_{direction}"] += len(encode(frame))


class GossipNet:
    """Drives the cores of one node (its own mesh, plus any watched meshes)."""

    def __init__(self, transport: Transport, cores: list[GossipCore],
                 clock: Callable[[], float] = time.monotonic,
                 send_timeout: float = 1.0) -> None:
        self.transport = transport
        self.cores = {core.topic: core for core in cores}
        self.clock = clock
        self.send_timeout = send_timeout
        self.stats: Counter[str] = Counter()
        self._busy: set[tuple[str, bytes]] = set()
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        transport.register(ALPN, self.handle)

    @property
    def tick_interval(self) -> float:
        return min(core.config.tick_interval for core in self.cores.values())

    def start(self) -> None:
        """Tick in the background, the first tick (the join's first pulls, this node's first
        digest) at the loop's next turn: after the boot's remaining steps (the node announces an
        address it already accepts on), before any frame the node accepts is handled (this task
        is queued ahead of the accept loop's)."""
        self._ticker = asyncio.create_task(self._tick_forever(), name="gossip-ticker")

    async def handle(self, remote: str, frame: Frame) -> Frame | None:
        topic = frame.body.get("topic")
        core = self.cores.get(topic) if isinstance(topic, bytes) else None
        if core is None:
            from_frame(frame)  # a malformed frame is a FrameError, not an unknown topic
            self.stats["unknown_topic"] += 1
            return None
        wire = _wire(core)
        message = wire.decode(frame)
        _count(core, frame, "in")
        reply = core.handle(remote, message, self.clock())
        self._dispatch(core, _urgent(core))
        if reply is None:
            return None
        reply_frame = wire.encode(reply)
        _count(core, reply_frame, "out")
        return reply_frame

    async def leave(self, timeout: float = 1.0, grace: float = 0.2) -> None:
        """Announce a clean leave and wait (bounded) for the announcements to be acknowledged.

        A live peer acknowledges in milliseconds; a dead, paused or cut-off one never does and
        used to hold every stop for the whole ``timeout``. Once each core's leave has reached
        one member (which spreads it as a rumor), the other sends get at most ``grace`` more.
        """
        if self._ticker is not None:
            self._ticker.cancel()
        now = self.clock()
        # Acknowledged sends: a one-way stream could die with the endpoint that closes next.
        pending = {asyncio.ensure_future(self._deliver(core, s, acknowledged=True)): core.topic
                   for core in self.cores.values() for s in core.leave(now)}
        unheard = set(pending.values())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending and unheard and loop.time() < deadline:
            done, _ = await asyncio.wait(pending, timeout=deadline - loop.time(),
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                topic = pending.pop(task)
                if not task.cancelled() and task.exception() is None and task.result():
                    unheard.discard(topic)
        if pending and loop.time() < deadline:
            await asyncio.wait(pending, timeout=min(grace, deadline - loop.time()))
        for task in pending:
            task.cancel()  # a peer that has not answered by now hears it from the others

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def _tick_forever(self) -> None:
        while True:
            self._dispatch_tick()
            await asyncio.sleep(self.tick_interval)

    def _dispatch_tick(self) -> None:
        now = self.clock()
        for core in self.cores.values():
            try:
                sends = core.tick(now)
            except Exception:  # a core bug must not stop the ticker
                log.exception("gossip tick failed")
                self.stats["tick_errors"] += 1
                continue
            self._dispatch(core, sends)

    def _dispatch(self, core: GossipCore, sends: list[Send]) -> None:
        """Deliver ``sends`` in the background, skipping peers still busy with the same kind."""
        for send in sends:
            key = (send.to.node_id, send.message.topic, _wire(core).is_request(send.message))
            if key in self._busy:
                self.stats["skipped_busy"] += 1
                continue
            self._busy.add(key)
            task = asyncio.ensure_future(self._deliver(core, send))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _t, key=key: self._busy.discard(key))

    async def _deliver(self, core: GossipCore, send: Send, acknowledged: bool = False) -> bool:
        """Send one message (a request if ``acknowledged``); whether it got through."""
        peer, message, wire = send.to, send.message, _wire(core)
        frame = wire.encode(message)
        _count(core, frame, "out")
        try:
            if wire.is_request(message) or acknowledged:
                reply = await self.transport.request(peer.node_id, peer.addrs, ALPN, frame, self.send_timeout)
                if reply.kind is Kind.GOSSIP_PULL_REPLY:
                    _count(core, reply, "in")
                    core.handle(peer.node_id, wire.decode(reply), self.clock())
                    self._dispatch(core, _urgent(core))
            else:
                await self.transport.send(peer.node_id, peer.addrs, ALPN, frame, self.send_timeout)
            self.stats["delivered"] += 1
            return True
        except FabricError as exc:
            self.stats["send_failed"] += 1
            log.debug("gossip to %s failed: %s", peer.node_id[:6], exc)
            return False
