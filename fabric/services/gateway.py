"""The gateway: its mesh's seat on the control plane, and the node that writes across meshes.

On the backbone (``--cross-mesh backbone``, the default) a gateway publishes its mesh's summary
and serves two operations on ``meshfabric/gateway/1``:

* ``lookup {target}``: for the nodes of its own mesh, resolve a node of another mesh (from its
  cache, or by fetching that mesh's members from one of its gateways); the answer is the
  member's signed digest.
* ``members {mesh}``: for the other meshes' gateways and consoles, every member of its own
  mesh (signed digests), with the summary version and hash.

In ``--cross-mesh watch`` mode it follows the gossip of the meshes it is told to watch
(``--watch-mesh``) instead, so its directory spans them. Either way it produces to other
meshes' brokers directly (its front door does the work). With ``--writer-to`` it also runs the
seed's simulated writer: a steady trickle of records to a broker, usually in another mesh.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opentelemetry.trace import SpanKind

from ..crossmesh import GATEWAY_ALPN
from ..errors import ConfigError, FabricError, ResolveError
from ..rpc import Operation
from .base import Service

log = logging.getLogger(__name__)


class GatewayService(Service):
    alpn = GATEWAY_ALPN

    def __init__(self, node) -> None:
        super().__init__(node)
        self.sent = 0
        self.failed = 0
        self._task: asyncio.Task | None = None

    def meta(self) -> dict[str, Any]:
        return {"watch": list(self.node.config.watch)}

    def operations(self) -> dict[str, Operation]:
        return {"lookup": self.lookup_op, "members": self.members_op}

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

    # -- the control plane -----------------------------------------------------

    async def lookup_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        target = args.get("target")
        if not isinstance(target, str):
            raise ConfigError("'target' must be a string: <mesh>.<type>, a full node name or <mesh>.<id prefix>")
        with self.node.telemetry.tracer.start_as_current_span(
                f"gateway.lookup {target}", kind=SpanKind.SERVER, attributes={"resolve.target": target}):
            try:
                entry = self.node.directory.resolve(target)  # our mesh, or one we watch
            except ResolveError:
                if self.node.backbone is None:
                    raise
                entry = await self.node.backbone.lookup(target)
            return {"digest": entry.signed.raw, "name": entry.name}

    async def members_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        mesh = args.get("mesh")
        if mesh != self.node.config.mesh or self.node.backbone is None:
            raise ResolveError(f"{self.node.name} serves the members of {self.node.config.mesh} on the backbone, "
                               f"not of {mesh!r}: ask a gateway of that mesh")
        with self.node.telemetry.tracer.start_as_current_span(f"gateway.members {mesh}", kind=SpanKind.SERVER):
            return self.node.backbone.own_members()

    # -- the simulated writer --------------------------------------------------

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
