"""The registry: which broker owns a topic, so a client can produce by topic name alone.

It learns from the brokers' gossip digests (each broker lists its topics in its digest's
metadata) and from explicit ``register`` calls. Operations on ``meshfabric/registry/1``:
``lookup {topic}`` → ``{topic, broker, mesh}``; ``register {topic, broker}``; ``topics {}``.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind

from ..errors import ConfigError, ResolveError
from ..rpc import Operation
from .base import Service
from .log import check_topic

ALPN = b"meshfabric/registry/1"


class RegistryService(Service):
    alpn = ALPN

    def __init__(self, node) -> None:
        super().__init__(node)
        self.registered: dict[str, str] = {}

    def operations(self) -> dict[str, Operation]:
        return {"lookup": self.lookup_op, "register": self.register_op, "topics": self.topics_op}

    def owners(self) -> dict[str, str]:
        """topic → broker name: registrations first, then what live brokers gossip."""
        found: dict[str, str] = {}
        for entry in self.node.directory.entries(type="broker", alive_only=True):
            for topic in entry.digest.meta.get("topics", []):
                found.setdefault(topic, entry.name)
        live = {e.name for e in self.node.directory.entries(alive_only=True)}
        found.update({t: b for t, b in self.registered.items() if b in live})
        return found

    async def lookup_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        topic = check_topic(args.get("topic"))
        with self.node.telemetry.tracer.start_as_current_span(
                f"lookup {topic}", kind=SpanKind.SERVER, attributes={"messaging.destination.name": topic}) as span:
            owners = self.owners()
            broker = owners.get(topic)
            if broker is None:
                brokers = self.node.directory.entries(mesh=self.node.config.mesh, type="broker", alive_only=True)
                if not brokers:
                    raise ResolveError(f"no broker owns topic {topic!r} and no live broker is known")
                broker = brokers[0].name  # a new topic: the first live broker will auto-create it
            span.set_attribute("registry.broker", broker)
            return {"topic": topic, "broker": broker, "mesh": broker.split(".")[0]}

    async def register_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        topic, broker = check_topic(args.get("topic")), args.get("broker")
        if not isinstance(broker, str) or broker.count(".") != 2:
            raise ConfigError("'broker' must be a full node name like mesh1.broker.239dc9")
        self.registered[topic] = broker
        return {"topic": topic, "broker": broker}

    async def topics_op(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"topics": self.owners()}
