"""The compute node: consume a topic, transform each record, produce it to another topic.

The trace continues across the hop: the producer put its trace context in the record's
headers, and the ``process`` span here is its child (with a span link too, per the messaging
conventions), so one produce fans out into a multi-hop trace. The consumed offset is kept in
``<data_dir>/compute.offset`` so a restart does not reprocess.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from .. import propagation, rpc
from ..errors import ConfigError, FabricError
from .base import Service
from .broker import ALPN as BROKER_ALPN
from .broker import messaging_attributes

log = logging.getLogger(__name__)

_UNSAMPLED = SpanContext(trace_id=0x5EED, span_id=0x5EED, is_remote=False, trace_flags=TraceFlags(0))

TRANSFORMS: dict[str, Callable[[bytes], bytes]] = {
    "upper": bytes.upper,
    "reverse": lambda b: b[::-1],
    "identity": lambda b: b,
}


class ComputeService(Service):
    def __init__(self, node) -> None:
        super().__init__(node)
        cfg = node.config
        if cfg.transform not in TRANSFORMS:
            raise ConfigError(f"unknown transform {cfg.transform!r}: choose one of {sorted(TRANSFORMS)}")
        self.transform = TRANSFORMS[cfg.transform]
        self.offset_path = cfg.data_dir / "compute.offset"
        self.offset = int(self.offset_path.read_text()) if self.offset_path.exists() else 0
        self.processed = 0
        self._task: asyncio.Task | None = None

    def meta(self) -> dict[str, Any]:
        cfg = self.node.config
        return {"consumes": cfg.compute_from, "produces": cfg.compute_to} if cfg.compute_from else {}

    async def start(self) -> None:
        if self.node.config.compute_from:
            self._task = asyncio.create_task(self._consume_forever(), name="compute")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _consume_forever(self) -> None:
        cfg = self.node.config
        while True:
            try:
                got = await self._poll_once(cfg.compute_from, cfg.compute_to)
            except FabricError as exc:
                log.debug("compute: poll failed: %s", exc)
                got = 0
            if not got:
                await asyncio.sleep(cfg.compute_poll_interval)

    async def _poll_once(self, source: str, sink: str) -> int:
        # Polling an idle topic five times a second is not work worth a trace: the poll runs
        # under an unsampled parent, so it and the spans it causes downstream (the broker's
        # fetch, the registry's lookup) are not recorded. Each record fetched is processed in
        # its producer's trace, below, and recorded there.
        with trace.use_span(trace.NonRecordingSpan(_UNSAMPLED)):
            broker = await self.node.frontdoor.broker_for(source, None)
            batch = await rpc.call(self.node.transport, broker.node_id, broker.addrs, BROKER_ALPN, "fetch",
                                   {"topic": source, "offset": self.offset, "max_records": 50})
        for record in batch["records"]:
            await self._process(record, source, sink)
            self.offset = record["offset"] + 1
            self.offset_path.write_text(str(self.offset))
        return len(batch["records"])

    async def _process(self, record: dict[str, Any], source: str, sink: str) -> None:
        parent = propagation.extract(record.get("headers"))
        producer_ctx = trace.get_current_span(parent).get_span_context()
        links = [Link(producer_ctx)] if producer_ctx.is_valid else []
        with self.node.telemetry.tracer.start_as_current_span(
                f"process {source}", context=parent, kind=SpanKind.CONSUMER, links=links,
                attributes={**messaging_attributes(source, "process"), "meshfabric.offset": record["offset"]}):
            await self.node.frontdoor.produce(sink, self.transform(record["value"]), key=record.get("key"))
        self.processed += 1
