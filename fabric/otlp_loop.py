"""Spans exported over OTLP/HTTP from the node's own event loop, with no export thread.

The SDK's ``BatchSpanProcessor`` hands every ended span to a thread that encodes batches and
posts them. In a busy node that thread and the event loop take turns at the GIL, and each
turn costs the loop. ``LoopBatchSpanProcessor`` keeps ended spans in a list instead; a task
on the loop encodes each full batch (with the HTTP exporter module's ``encode_spans``: ours,
``fabric/otlp_encoder.py``, unless ``MESHFABRIC_OTLP_ENCODER=sdk``) and posts it over one
kept-alive HTTP/1.1 connection (``h11`` on asyncio's streams), so the loop never waits on the
network. Measured against the SDK's processor, interleaved (``docs/performance-rounds.md``, tenth
round): 2-13% more records a second with every span exported (four runs), ~5-10 µs less CPU a
record in each of the gateway and the broker.

It batches like the SDK's processor and reads the same variables (``OTEL_BSP_SCHEDULE_DELAY``,
``..._MAX_QUEUE_SIZE``, ``..._MAX_EXPORT_BATCH_SIZE``; ``OTEL_EXPORTER_OTLP_TIMEOUT`` and
``..._TRACES_TIMEOUT`` bound each batch's posts) and retries as its HTTP exporter does: a
refused or broken connection and 429, 502, 503 or 504 are tried again after 1, 2, 4... s, up to
six times within the timeout, then the batch is dropped and logged; spans over a full queue are
dropped and logged; neither ever raises into the node. A node uses it only where it
sends what the SDK's exporter would (``choose``): OTLP/HTTP to a plain-``http`` loopback
collector with no compression, headers, certificates, credential provider or proxy set; anything
else keeps the SDK's processor, and so does ``MESHFABRIC_OTLP_EXPORT=thread``. Before the
node gives it its loop (``attach``), and at ``shutdown``, it sends what is left through the
SDK's exporter on the calling thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import h11
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .errors import ConfigError
from .lean_span import LeanSpan
from .otlp_transport import is_plain_loopback

logger = logging.getLogger(__name__)

EXPORT_ENV = "MESHFABRIC_OTLP_EXPORT"
CHOICES = ("auto", "thread")
# What would make the SDK's exporter send more than a plain POST of the bytes (proxies and
# credential providers: ``otlp_transport.is_plain_loopback``).
NOT_PLAIN = tuple(f"OTEL_EXPORTER_OTLP_{signal}{what}" for what in ("COMPRESSION", "HEADERS", "CERTIFICATE",
                                                                    "CLIENT_KEY", "CLIENT_CERTIFICATE")
                  for signal in ("", "TRACES_"))
# Retries as the SDK's OTLP/HTTP exporter makes them (opentelemetry-exporter-otlp-common).
ATTEMPTS = 6
RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_JITTER = 0.2


def choose(url: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a node posting its spans to ``url`` exports from its loop: ``MESHFABRIC_OTLP_EXPORT``
    is ``auto`` (the default; ``thread`` keeps the SDK's processor) and the SDK's exporter
    would send a plain POST to a loopback ``http`` URL. A bad value is a ``ConfigError``."""
    choice = environ.get(EXPORT_ENV, "auto").strip() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{EXPORT_ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    return choice == "auto" and is_plain_loopback(url, environ) and not any(environ.get(v) for v in NOT_PLAIN)


def _number(environ: Mapping[str, str], names: Sequence[str], default: float) -> float:
    """The first of ``names`` set, as a positive number; else ``default``."""
    for name in names:
        raw = environ.get(name, "").strip()
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = 0.0
            if value <= 0:
                raise ConfigError(f"{name}={raw!r}: expected a positive number (default {default:g})")
            return value
    return default


def _retry_after(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    """A ``Retry-After`` of delay-seconds, as the SDK reads it (an HTTP date: ignored)."""
    for name, value in headers:
        if name == b"retry-after" and value.strip().isdigit():
            return float(value.strip())
    return None


class HttpPoster:
    """POSTs protobuf bodies to one URL over a kept-alive HTTP/1.1 connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "localhost", parts.port or 80
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = [("Host", parts.netloc), ("Content-Type", "application/x-protobuf"),
                         ("User-Agent", "meshfabric-otlp")]
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._conn = h11.Connection(h11.CLIENT)

    async def post(self, body: bytes) -> tuple[int, float | None]:
        """One POST of ``body``: the response's status and its ``Retry-After`` in seconds, if
        any. A refused or broken connection raises ``OSError``."""
        reused = self._streams is not None and self._conn.our_state is h11.IDLE and not self._streams[0].at_eof()
        if not reused:
            await self._connect()  # none yet, out of step, or closed by the collector while idle
        try:
            return await self._exchange(body)
        except ConnectionError:
            if not reused:
                raise
        # A kept connection can die unnoticed between two posts: once more on a new one at
        # once, as the SDK's exporter does for its pooled connections.
        await self._connect()
        return await self._exchange(body)

    async def _connect(self) -> None:
        self.close()
        self._streams = await asyncio.open_connection(self.host, self.port)
        self._conn = h11.Connection(h11.CLIENT)

    async def _exchange(self, body: bytes) -> tuple[int, float | None]:
        assert self._streams is not None
        reader, writer = self._streams
        conn = self._conn
        try:
            request = h11.Request(method="POST", target=self.target,
                                  headers=[*self._headers, ("Content-Length", str(len(body)))])
            writer.writelines([conn.send(request), *conn.send_with_data_passthrough(h11.Data(data=body)),
                               conn.send(h11.EndOfMessage())])  # the body as it is, not copied
            status, retry_after = 0, None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("the collector closed the connection before answering")
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    status, retry_after = event.status_code, _retry_after(event.headers)
                elif isinstance(event, h11.EndOfMessage):
                    break
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()  # keep the connection for the next post
            return status, retry_after
        except h11.ProtocolError as exc:
            self.close()
            raise OSError(f"a bad HTTP answer from the collector: {exc}") from exc
        except BaseException:
            self.close()  # a post cut off halfway leaves the connection out of step
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class LoopBatchSpanProcessor(SpanProcessor):
    """Batches sampled spans and posts them over OTLP/HTTP from an asyncio loop.

    ``url`` is the full traces URL; ``fallback``, the SDK's exporter for the same URL, sends
    what no loop can (before ``attach``, at ``shutdown``); ``encode`` turns a batch into the
    request's bytes."""

    def __init__(self, url: str, fallback: SpanExporter, encode: Callable[[Sequence[ReadableSpan]], bytes],
                 environ: Mapping[str, str] = os.environ, schedule_delay_ms: float | None = None) -> None:
        self.url, self.fallback, self.encode = url, fallback, encode
        self.delay_s = _number(environ, ["OTEL_BSP_SCHEDULE_DELAY"],  # the variable wins, as in the SDK
                               5000 if schedule_delay_ms is None else schedule_delay_ms) / 1000
        self.max_queue = int(_number(environ, ["OTEL_BSP_MAX_QUEUE_SIZE"], 2048))
        self.batch_size = min(int(_number(environ, ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"], 512)), self.max_queue)
        self.timeout_s = _number(environ, ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"], 10)
        self.dropped = 0  # spans that found the queue full
        self.failed = 0  # spans whose post failed after every attempt
        self.posts = 0
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._poster = HttpPoster(url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake: asyncio.Event | None = None
        self._draining: asyncio.Lock | None = None  # one drain at a time: the export task's or a flush's
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._fallback_lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Export from ``loop`` from now on; call it on the loop's own thread."""
        if self._closed or self._loop is not None:
            return
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._wake, self._draining = asyncio.Event(), asyncio.Lock()
        self._task = loop.create_task(self._run(), name="otlp-export")

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        # a LeanSpan is always sampled: the tracer gives record-only spans to the SDK's tracer
        if self._closed or (type(span) is not LeanSpan and not span.context.trace_flags.sampled):
            return
        queue = self._queue
        if len(queue) >= self.max_queue:
            self.dropped += 1
            if self.dropped == 1:
                logger.warning("the OTLP export queue is full (%d spans): dropping spans", self.max_queue)
            return
        queue.append(span)
        if len(queue) >= self.batch_size and self._wake is not None and not self._wake.is_set():
            if threading.get_ident() == self._loop_thread:
                self._wake.set()
            else:
                self._wake_from_elsewhere()

    def _wake_from_elsewhere(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wake.set)  # type: ignore[union-attr]
        except RuntimeError:
            pass  # the loop is closed: shutdown sends what is left

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        while not self._closed:
            whole_batches = True
            if len(self._queue) < self.batch_size:
                try:
                    async with asyncio.timeout(self.delay_s):
                        await wake.wait()
                except TimeoutError:
                    whole_batches = False  # the schedule's delay is up: whatever waits goes too
            wake.clear()
            try:
                await self._drain(whole_batches)
            except Exception:  # a bug here must not end the export task: the queue would only fill
                logger.exception("exporting spans failed")

    async def _drain(self, whole_batches: bool = False) -> None:
        """Post what is queued, a batch at a time (only whole batches if ``whole_batches``),
        after any drain already under way."""
        assert self._draining is not None
        async with self._draining:
            queue = self._queue
            while len(queue) >= (self.batch_size if whole_batches else 1):
                batch = [queue.popleft() for _ in range(min(len(queue), self.batch_size))]
                try:
                    body = self.encode(batch)
                except Exception:  # the SDK's processor logs and goes on too
                    logger.exception("encoding %d spans for OTLP failed: dropped", len(batch))
                    self.failed += len(batch)
                    continue
                await self._post(body, len(batch))

    async def _post(self, body: bytes, count: int) -> None:
        """Post one batch, retrying as the SDK's HTTP exporter does: a refused or broken
        connection and 429/502/503/504 are tried again after 1, 2, 4... s (a fifth either
        way, or the collector's ``Retry-After``), up to six attempts within ``timeout_s`` in all;
        a collector that starts a moment after the node still gets the node's first spans."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        for attempt in range(ATTEMPTS):
            backoff = 2 ** attempt * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
            try:
                async with asyncio.timeout_at(deadline):
                    status, retry_after = await self._poster.post(body)
                if 200 <= status < 400:
                    self.posts += 1
                    return
                problem, retryable = f"HTTP {status}", status in RETRY_STATUSES
                backoff = retry_after if retryable and retry_after is not None else backoff
            except TimeoutError:
                problem, retryable = f"no answer within {self.timeout_s:g}s", False
                self._poster.close()
            except OSError as exc:
                problem, retryable = str(exc) or type(exc).__name__, True
            if not retryable or attempt + 1 == ATTEMPTS or backoff > deadline - loop.time():
                break
            logger.debug("exporting %d spans to %s: %s; trying again in %.2fs", count, self.url, problem, backoff)
            await asyncio.sleep(backoff)
        self.failed += count
        logger.warning("exporting %d spans to %s failed: %s; they are dropped", count, self.url, problem)

    async def flush(self) -> None:
        """On the loop: wait out a post in flight, then post everything queued."""
        if self._draining is not None and not self._closed:
            await self._drain()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything queued: through the loop if it runs on another thread, else here."""
        loop = self._loop
        if loop is not None and loop.is_running() and threading.get_ident() != self._loop_thread:
            try:
                asyncio.run_coroutine_threadsafe(self.flush(), loop).result(timeout_millis / 1000)
                return True
            except Exception:  # noqa: BLE001 - a timeout, or the loop went away: report it
                return False
        return self._export_here()

    def _export_here(self) -> bool:
        """Post what is queued through the SDK's exporter, on this thread."""
        with self._fallback_lock:
            spans = list(self._queue)
            self._queue.clear()
            ok = True
            for start in range(0, len(spans), self.batch_size):
                ok = self.fallback.export(spans[start:start + self.batch_size]) is SpanExportResult.SUCCESS and ok
            return ok

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            if threading.get_ident() == self._loop_thread:
                self._task.cancel()
                self._poster.close()
            else:
                try:
                    self._loop.call_soon_threadsafe(self._task.cancel)
                except RuntimeError:
                    pass
        self._export_here()
        self.fallback.shutdown()
