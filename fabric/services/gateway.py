"""The gateway: the node that writes across meshes.

It follows the gossip of the meshes it is told to watch (``--watch-mesh``), so its directory
spans them, and produces to their brokers directly (its front door does the work). With
``--writer-to`` it also runs the seed's simulated writer: a steady trickle of records to a
broker, usually in another mesh.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import FabricError
from .base import Service

log = logging.getLogger(__name__)


class GatewayService(Service):
    def __init__(self, node) -> None:
        super().__init__(node)
        self.sent = 0
        self.failed = 0
        self._task: asyncio.Task | None = None

    def meta(self) -> dict[str, Any]:
        return {"watch": list(self.node.config.watch)}

    async def start(self) -> None:
        if self.node.config.writer_to:
            self._task = asyncio.create_task(self._write_forever(), name="gateway-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def control_operations(self) -> dict[str, Any]:
        async def writer(_: dict[str, Any]) -> dict[str, Any]:
            return {"sent": self.sent, "failed": self.failed, "to": self.node.config.writer_to}
        return {"writer": writer}

    async def _write_forever(self) -> None:
        cfg = self.node.config
        interval = 1.0 / cfg.writer_rate
        while True:
            await asyncio.sleep(interval)
            value = f"record {self.sent} from {self.node.name}".encode()
            try:
                with self.node.telemetry.tracer.start_as_current_span("writer.produce"):
                    await self.node.frontdoor.produce(cfg.writer_topic, value, to=cfg.writer_to)
                self.sent += 1
            except FabricError as exc:
                self.failed += 1
                log.info("writer: produce to %s failed: %s", cfg.writer_to, exc)
