"""The public async client: produce, fetch and resolve through any node of a fabric.

    async with await FabricClient.connect("<node id>@127.0.0.1:4433") as client:
        ack = await client.produce("orders", b"hello", to="mesh2.broker")
        batch = await client.fetch("orders", from_="mesh2.broker")

The client binds its own iroh endpoint (a fresh key each time), so it reaches nodes the same
way nodes reach each other. Its spans (``produce <topic>``, a PRODUCER span) start the trace
that the node and the broker continue; they are exported like a node's, by the standard
``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind

from . import rpc
from .address import parse_peer
from .errors import ConfigError
from .identity import Identity
from .services.broker import messaging_attributes
from .services.frontdoor import ALPN as NODE_ALPN
from .telemetry import NodeLabels, Telemetry
from .transport import Transport


def _as_bytes(value: bytes | str | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise ConfigError(f"{what} must be bytes or str, not {type(value).__name__}")


class FabricClient:
    """A connection to one node (the *via* node) of a fabric."""

    def __init__(self, transport: Transport, via: str, telemetry: Telemetry, timeout: float = 5.0) -> None:
        self.transport = transport
        self.via = parse_peer(via)
        self.telemetry = telemetry
        self.timeout = timeout

    @classmethod
    async def connect(cls, via: str, *, service_name: str | None = None, timeout: float = 5.0,
                      bind: str = "127.0.0.1:0") -> "FabricClient":
        """Bind a client endpoint on ``bind``; ``via`` is a node address ``<id>@<ip:port>``.

        Bind an address that can reach the node: loopback for nodes on this host's loopback,
        a bridge address (or ``0.0.0.0:0``) for nodes in other network namespaces.
        """
        parse_peer(via)  # fail before binding anything
        identity = Identity.generate()
        name = service_name or f"client.{identity.node_id[:6]}"
        telemetry = Telemetry.from_env(NodeLabels(name, "", "client", identity.node_id))
        return cls(await Transport.bind(identity, bind), via, telemetry, timeout)

    async def _call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        return await rpc.call(self.transport, self.via.node_id, self.via.addrs, NODE_ALPN, op, args, self.timeout)

    async def resolve(self, target: str) -> dict[str, Any]:
        """The via node's directory entry for ``target`` (name, ``<mesh>.<type>`` or id prefix)."""
        with self.telemetry.tracer.start_as_current_span(f"resolve {target}", kind=SpanKind.CLIENT):
            return (await self._call("resolve", {"target": target}))["entry"]

    async def produce(self, topic: str, value: bytes | str, *, to: str | None = None,
                      key: bytes | str | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Produce one record through the via node; returns the broker's ack (topic, offset, broker)."""
        args = {"topic": topic, "value": _as_bytes(value, "value"), "to": to,
                "key": _as_bytes(key, "key"), "headers": headers or {}}
        with self.telemetry.tracer.start_as_current_span(
                f"produce {topic}", kind=SpanKind.PRODUCER, attributes=messaging_attributes(topic, "send")):
            return await self._call("produce", args)

    async def produce_batch(self, topic: str, values: list[bytes | str], *, to: str | None = None) -> dict[str, Any]:
        """Produce many records in one request (one append and one fsync on the broker);
        returns ``{offsets, duplicates, broker, ...}``."""
        args = {"topic": topic, "values": [_as_bytes(v, "value") for v in values], "to": to}
        with self.telemetry.tracer.start_as_current_span(
                f"produce {topic}", kind=SpanKind.PRODUCER,
                attributes={**messaging_attributes(topic, "send"), "messaging.batch.message_count": len(values)}):
            return await self._call("produce_batch", args)

    async def fetch(self, topic: str, *, offset: int = 0, max_records: int = 100,
                    from_: str | None = None) -> dict[str, Any]:
        """Records of ``topic`` from ``offset`` on, from broker ``from_`` (default: the registry's)."""
        args = {"topic": topic, "offset": offset, "max_records": max_records, "from": from_}
        with self.telemetry.tracer.start_as_current_span(
                f"fetch {topic}", kind=SpanKind.CLIENT, attributes=messaging_attributes(topic, "receive")):
            return await self._call("fetch", args)

    async def close(self) -> None:
        self.telemetry.flush()
        self.telemetry.shutdown()
        await self.transport.close()

    async def __aenter__(self) -> "FabricClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
