"""Every node's front door: resolve a name, and produce or fetch through the node.

A node that is asked to produce to ``mesh2.broker`` resolves it and sends straight to that
broker over iroh: the node is the writer, nothing stands in between. A name its directory does
not hold is looked up across meshes through the control plane (``crossmesh.py``: a gateway of
this mesh, which asks the backbone); a watching gateway's directory spans the meshes it
watches. Without ``to``, the node asks a registry which broker owns the topic.

Operations on ``meshfabric/node/1``: ``resolve {target}``, ``produce {topic, value, to?, key?,
headers?}``, ``fetch {topic, from?, offset?, max_records?}``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from opentelemetry.trace import SpanKind

from .. import rpc
from ..crossmesh import CrossMesh
from ..directory import Entry
from ..errors import ConfigError, ResolveError
from ..identity import verify_signature
from ..producer import Producer, Target
from ..rpc import Operation
from .base import Service
from .broker import ALPN as BROKER_ALPN
from .log import check_topic

ALPN = b"meshfabric/node/1"
REGISTRY_ALPN = b"meshfabric/registry/1"


def target_of(entry: Entry) -> Target:
    return Target(entry.name, entry.node_id, entry.addrs)


class FrontDoor(Service):
    alpn = ALPN

    def __init__(self, node) -> None:
        super().__init__(node)
        self.producer: Producer | None = None
        self.crossmesh = CrossMesh(node, verify_signature)

    async def start(self) -> None:
        self.producer = Producer(self.node.transport, self.node.telemetry.tracer, down=self.node.directory.down)

    def operations(self) -> dict[str, Operation]:
        return {"resolve": self.resolve_op, "produce": self.produce_op, "produce_batch": self.produce_batch_op,
                "fetch": self.fetch_op}

    # -- resolving -------------------------------------------------------------

    async def resolve(self, target: str) -> Entry:
        """Find ``target`` in this node's directory, or in another mesh through the control
        plane, inside a ``resolve`` span (the lookup's spans are its children)."""
        with self.node.telemetry.tracer.start_as_current_span(f"resolve {target}",
                                                              attributes={"resolve.target": target}) as span:
            try:
                entry = self.node.directory.resolve(target)
            except ResolveError as not_found:
                entry = await self.crossmesh.resolve(target, not_found)
                span.set_attribute("resolve.via", "backbone")
            span.set_attribute("resolve.name", entry.name)
            span.set_attribute("resolve.mesh", entry.mesh)
            return entry

    async def broker_for(self, topic: str, to: str | None) -> Entry:
        """The broker to use: ``to`` if given, else the one a registry names for ``topic``."""
        if to:
            entry = await self.resolve(to)
            if entry.type != "broker":
                raise ConfigError(f"{entry.name} is a {entry.type}, not a broker: produce to a broker")
            return entry
        registry = await self.resolve(f"{self.node.config.mesh}.registry")
        answer = await rpc.call(self.node.transport, registry.node_id, registry.addrs, REGISTRY_ALPN,
                                "lookup", {"topic": topic})
        return await self.resolve(answer["broker"])

    async def resolve_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        target = args.get("target")
        if not isinstance(target, str):
            raise ConfigError("'target' must be a string: a name, <mesh>.<type> or an id prefix")
        return {"entry": (await self.resolve(target)).as_dict(self.node.clock())}

    # -- producing and fetching -------------------------------------------------

    async def produce(self, topic: str, value: bytes, to: str | None = None, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Produce one record as this node (used by the op below and by the gateway's writer)."""
        check_topic(topic)
        broker = await self.broker_for(topic, to)
        assert self.producer is not None, "the node is not started"
        ack = await self.producer.send(target_of(broker), topic, value, key, headers)
        return {**ack, "broker_mesh": broker.mesh, "via": self.node.name}

    async def produce_batch(self, topic: str, values: list[bytes], to: str | None = None) -> dict[str, Any]:
        """Produce many records in one request to one broker."""
        check_topic(topic)
        if not isinstance(values, list) or not values or not all(isinstance(v, bytes) for v in values):
            raise ConfigError("'values' must be a non-empty list of bytes")
        broker = await self.broker_for(topic, to)
        assert self.producer is not None, "the node is not started"
        ack = await self.producer.send_batch(target_of(broker), topic, values)
        return {**ack, "broker_mesh": broker.mesh, "via": self.node.name}

    def _serving_produce(self, args: dict[str, Any]) -> tuple[str | None, Any]:
        """Check a produce request's target; return it with the SERVER span to run under."""
        to = args.get("to")
        if to is not None and not isinstance(to, str):
            raise ConfigError("'to' must be a node name or <mesh>.<type>")
        span = self.node.telemetry.tracer.start_as_current_span(
            "produce", kind=SpanKind.SERVER,
            attributes={"messaging.destination.name": str(args.get("topic")), "produce.to": to or ""})
        return to, span

    async def produce_batch_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        to, span = self._serving_produce(args)
        with span:
            return await self.produce_batch(args.get("topic"), args.get("values"), to)

    async def produce_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(args.get("value"), bytes):
            raise ConfigError("'value' must be bytes")
        to, span = self._serving_produce(args)
        with span:
            return await self.produce(args.get("topic"), args["value"], to, args.get("key"), args.get("headers"))

    async def fetch(self, topic: str, from_: str | None = None, offset: int = 0,
                    max_records: int = 100) -> dict[str, Any]:
        """Fetch records of ``topic`` from broker ``from_`` (default: the registry's choice)."""
        check_topic(topic)
        broker = await self.broker_for(topic, from_)
        result = await rpc.call(self.node.transport, broker.node_id, broker.addrs, BROKER_ALPN, "fetch",
                                {"topic": topic, "offset": offset, "max_records": max_records})
        return {**result, "broker": broker.name}

    async def fetch_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        with self.node.telemetry.tracer.start_as_current_span("fetch", kind=SpanKind.SERVER):
            return await self.fetch(args.get("topic"), args.get("from"), args.get("offset", 0),
                                    args.get("max_records", 100))

    # -- the same, on the control socket (JSON: values are text) -----------------

    def control_operations(self) -> dict[str, Any]:
        tracer = self.node.telemetry.tracer

        async def produce(request: dict[str, Any]) -> dict[str, Any]:
            value = request.get("value")
            if not isinstance(value, str):
                raise ConfigError("'value' must be a string")
            with tracer.start_as_current_span("produce", kind=SpanKind.SERVER):
                return await self.produce(request.get("topic"), value.encode(), request.get("to"))

        async def fetch(request: dict[str, Any]) -> dict[str, Any]:
            with tracer.start_as_current_span("fetch", kind=SpanKind.SERVER):
                result = await self.fetch(request.get("topic"), request.get("from"),
                                          request.get("offset", 0), request.get("max_records", 100))
            for record in result["records"]:
                record["value"] = record["value"].decode("utf-8", "backslashreplace")
                record["key"] = record["key"].decode("utf-8", "backslashreplace") if record["key"] else None
            return result

        async def resolve(request: dict[str, Any]) -> dict[str, Any]:
            return await self.resolve_op("", request)

        return {"produce": produce, "fetch": fetch, "resolve": resolve, "produce_many": self.produce_many}

    async def _write_one(self, topic: str, value: bytes, to: str | None) -> None:
        with self.node.telemetry.tracer.start_as_current_span("writer.produce"):
            await self.produce(topic, value, to)

    async def produce_many(self, request: dict[str, Any]) -> dict[str, Any]:
        """Measure this node as a writer: ``count`` produces of ``size`` bytes to ``to``, first one
        at a time (latencies; not with ``latencies: false``), then ``concurrency`` at a time
        (throughput)."""
        to, topic = request.get("to"), request.get("topic", "bench")
        count, size, concurrency, batch = (request.get(k, d) for k, d in (
            ("count", 100), ("size", 100), ("concurrency", 16), ("batch", 1)))
        if not all(isinstance(v, int) and v > 0 for v in (count, size, concurrency, batch)) or count > 100_000:
            raise ConfigError("'count' (<= 100000), 'size', 'concurrency' and 'batch' must be positive integers")
        value = b"v" * size
        if batch > 1:  # throughput only: ``concurrency`` batches of ``batch`` records in flight
            gate = asyncio.Semaphore(concurrency)

            async def one_batch() -> None:
                async with gate:
                    with self.node.telemetry.tracer.start_as_current_span("writer.produce"):
                        await self.produce_batch(topic, [value] * batch, to)

            start = time.perf_counter()
            await asyncio.gather(*(one_batch() for _ in range(max(1, count // batch))))
            return {"throughput_rps": max(1, count // batch) * batch / (time.perf_counter() - start)}
        latencies = []
        for _ in range(count if request.get("latencies", True) else 0):
            start = time.perf_counter()
            await self._write_one(topic, value, to)
            latencies.append(time.perf_counter() - start)
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                await self._write_one(topic, value, to)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return {"latencies_s": latencies, "throughput_rps": count / (time.perf_counter() - start)}
