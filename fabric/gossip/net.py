"""Runs gossip cores over the transport: the ticker, the wire format, the ALPN handler.

Pushes go one-way on uni streams; pulls are requests whose reply is the full state. A send
to a peer that is still busy with the previous one is skipped (counted), so a dead or paused
peer never piles up work: the protocol's own retries (the next tick) cover it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Callable

from ..errors import FabricError, FrameError
from ..frames import Frame, Kind
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
        """Send the first pulls (the join) at once, then tick in the background."""
        self._dispatch_tick()
        self._ticker = asyncio.create_task(self._tick_forever(), name="gossip-ticker")

    async def handle(self, remote: str, frame: Frame) -> Frame | None:
        message = from_frame(frame)
        core = self.cores.get(message.topic)
        if core is None:
            self.stats["unknown_topic"] += 1
            return None
        reply = core.handle(remote, message, self.clock())
        return to_frame(reply) if reply is not None else None

    async def leave(self, timeout: float = 1.0) -> None:
        """Announce a clean leave and wait (bounded) for the announcements to go out."""
        if self._ticker is not None:
            self._ticker.cancel()
        now = self.clock()
        sends = [s for core in self.cores.values() for s in core.leave(now)]
        if sends:
            # Acknowledged sends: a one-way stream could die with the endpoint that closes next.
            await asyncio.wait([asyncio.ensure_future(self._deliver(None, s, acknowledged=True))
                                for s in sends], timeout=timeout)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            self._dispatch_tick()

    def _dispatch_tick(self) -> None:
        now = self.clock()
        for core in self.cores.values():
            try:
                sends = core.tick(now)
            except Exception:  # a core bug must not stop the ticker
                log.exception("gossip tick failed")
                self.stats["tick_errors"] += 1
                continue
            for send in sends:
                key = (send.to.node_id, send.message.topic)
                if key in self._busy:
                    self.stats["skipped_busy"] += 1
                    continue
                self._busy.add(key)
                task = asyncio.ensure_future(self._deliver(core, send))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(lambda _t, key=key: self._busy.discard(key))

    async def _deliver(self, core: GossipCore | None, send: Send, acknowledged: bool = False) -> None:
        peer, message = send.to, send.message
        try:
            if isinstance(message, Pull) or acknowledged:
                reply = await self.transport.request(peer.node_id, peer.addrs, ALPN,
                                                     to_frame(message), self.send_timeout)
                if core is not None and reply.kind is Kind.GOSSIP_PULL_REPLY:
                    core.handle(peer.node_id, from_frame(reply), self.clock())
            else:
                await self.transport.send(peer.node_id, peer.addrs, ALPN, to_frame(message),
                                          self.send_timeout)
            self.stats["delivered"] += 1
        except FabricError as exc:
            self.stats["send_failed"] += 1
            log.debug("gossip to %s failed: %s", peer.node_id[:6], exc)
