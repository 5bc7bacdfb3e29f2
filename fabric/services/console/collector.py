"""The console as a collector: take OTLP exports, keep their spans, pass them on.

Spans reach the console the way they reach any collector: a node's OTLP exporter posts an
``ExportTraceServiceRequest`` to ``/v1/traces`` (decoded by the shared ``fabric.otlp``). The
console's own spans are also taken in-process (``LocalTap``), so it shows its own boot even
when its exporter points elsewhere. With ``--otlp-forward URL`` every accepted export body is
re-posted, unchanged, to another OTLP/HTTP endpoint (Jaeger, a collector), best effort.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from ...captured import CapturedSpan, from_sdk
from ...errors import ConfigError
from .store import SpanStore
from .topology import EdgeTracker

log = logging.getLogger(__name__)

FORWARD_QUEUE = 256  # export bodies waiting to be forwarded; more are dropped (and counted)


def forward_url(url: str) -> str:
    """The OTLP/HTTP traces URL to forward to; a bare ``http://host:port`` gets ``/v1/traces``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--otlp-forward {url!r} is not an OTLP/HTTP URL: pass one like "
                          "http://127.0.0.1:4318 or http://127.0.0.1:4318/v1/traces")
    path = parts.path if parts.path not in ("", "/") else "/v1/traces"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class Forwarder:
    """Re-posts export bodies to ``url`` from a background task, through a bounded queue."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = forward_url(url)
        self.timeout = timeout
        self.stats = {"forwarded": 0, "failed": 0, "dropped": 0}
        self._queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue(FORWARD_QUEUE)
        self._task: asyncio.Task | None = None

    def offer(self, body: bytes, content_type: str, encoding: str) -> None:
        headers = {"Content-Type": content_type}
        if encoding:
            headers["Content-Encoding"] = encoding
        try:
            self._queue.put_nowait((body, headers))
        except asyncio.QueueFull:
            self.stats["dropped"] += 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="console-forward")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        import aiohttp  # loaded with the console only (see service.py)

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                body, headers = await self._queue.get()
                try:
                    async with session.post(self.url, data=body, headers=headers) as reply:
                        ok = reply.status < 300
                        if not ok:
                            log.info("forward to %s: HTTP %s %s", self.url, reply.status, (await reply.text())[:200])
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    ok = False
                    log.info("forward to %s failed: %r", self.url, exc)
                self.stats["forwarded" if ok else "failed"] += 1


class Collector:
    """Where spans come in: decode, store, trace edges, forward."""

    def __init__(self, store: SpanStore, edges: EdgeTracker, forwarder: Forwarder | None = None) -> None:
        self.store = store
        self.edges = edges
        self.forwarder = forwarder
        self.stats: dict[str, Any] = {"exports": 0, "rejected": 0, "last_rejection": None}

    async def ingest(self, body: bytes, content_type: str, encoding: str = "") -> int:
        """Decode one OTLP/HTTP export body and keep its spans; returns how many it held.

        Raises ``fabric.otlp.OtlpBodyError`` (with the HTTP status to answer) for a bad body.
        Decoding runs in a worker thread, so a large export does not stall the event loop.
        """
        from ...otlp import decode_body  # loads protobuf: only once a node exports to this console
        try:
            spans = await asyncio.to_thread(decode_body, body, content_type, encoding)
        except Exception as exc:
            self.stats["rejected"] += 1
            self.stats["last_rejection"] = str(exc)[:300]
            raise
        self.stats["exports"] += 1
        self.accept(spans)
        if self.forwarder is not None:
            self.forwarder.offer(body, content_type, encoding)
        return len(spans)

    def accept(self, spans: list[CapturedSpan]) -> int:
        """Keep decoded spans; returns how many were new."""
        fresh = self.store.add(spans)
        self.edges.observe(fresh)
        return len(fresh)


class LocalTap(SpanProcessor):
    """Hands the console node's own finished spans to its collector, on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, accept: Callable[[list[CapturedSpan]], int]) -> None:
        self._loop = loop
        self._accept = accept
        self._closed = False

    def take(self, spans: list[ReadableSpan]) -> None:
        """Convert finished SDK spans (as an OTLP receiver would) and hand them over."""
        if spans and not self._closed:
            decoded = [from_sdk(span) for span in spans]
            try:
                self._loop.call_soon_threadsafe(self._accept, decoded)
            except RuntimeError:  # the loop is closed: the node is gone, and so is the console
                self._closed = True

    def on_end(self, span: ReadableSpan) -> None:
        self.take([span])

    def shutdown(self) -> None:
        self._closed = True
