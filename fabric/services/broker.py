"""The broker: accepts produced records into its durable log and serves them back.

Operations on ``meshfabric/broker/1``:

* ``produce {topic, value, key?, headers?, producer_id?, seq?}`` → ``{topic, offset, duplicate}``
  after the record is fsynced. A retry with the same ``(producer_id, seq)`` returns the first
  offset with ``duplicate: true`` and stores nothing.
* ``fetch {topic, offset, max_records}`` → ``{records: [...], next_offset, end_offset}``.
* ``topics {}`` → ``{topics: {name: length}}``.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.trace import SpanKind

from ..errors import ConfigError
from ..rpc import Operation
from .base import Service
from .log import Log, check_topic

ALPN = b"meshfabric/broker/1"
MESSAGING_SYSTEM = "meshfabric"
MAX_FETCH = 1000

# Test-only switch for the chaos harness's planted bug: acknowledge before the data is durable.
UNSAFE_NO_FSYNC_ENV = "MESHFABRIC_UNSAFE_NO_FSYNC"


def messaging_attributes(topic: str, operation: str) -> dict[str, str]:
    """The OTel messaging semantic-convention attributes of a span about ``topic``."""
    return {"messaging.system": MESSAGING_SYSTEM, "messaging.destination.name": topic,
            "messaging.operation": operation}


class BrokerService(Service):
    alpn = ALPN

    def __init__(self, node) -> None:
        super().__init__(node)
        cfg = node.config
        fsync = os.environ.get(UNSAFE_NO_FSYNC_ENV) != "1"
        self.log = Log(cfg.data_dir / "log", fsync=fsync)
        self.max_record_bytes = cfg.max_record_bytes
        self.auto_create = cfg.auto_create_topics
        for topic in cfg.topics:
            self.log.topic(topic, create=True)

    def operations(self) -> dict[str, Operation]:
        return {"produce": self.produce, "fetch": self.fetch, "topics": self.list_topics}

    def meta(self) -> dict[str, Any]:
        return {"topics": sorted(self.log.topics)}

    async def produce(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        topic = check_topic(args.get("topic"))
        value, key, headers = args.get("value"), args.get("key"), args.get("headers") or {}
        producer_id, seq = args.get("producer_id"), args.get("seq")
        if not isinstance(value, bytes):
            raise ConfigError("'value' must be bytes")
        if key is not None and not isinstance(key, bytes):
            raise ConfigError("'key' must be bytes or absent")
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigError("'headers' must map strings to strings")
        if (producer_id is None) != (seq is None) or (producer_id is not None and not (
                isinstance(producer_id, str) and isinstance(seq, int) and seq >= 0)):
            raise ConfigError("'producer_id' (string) and 'seq' (int >= 0) go together")
        size = len(value) + len(key or b"")
        if size > self.max_record_bytes:
            raise ConfigError(f"record is {size} bytes, over this broker's {self.max_record_bytes}-byte limit")
        tracer = self.node.telemetry.tracer
        with tracer.start_as_current_span(f"receive {topic}", kind=SpanKind.CONSUMER,
                                          attributes={**messaging_attributes(topic, "receive"),
                                                      "messaging.client_id": remote[:16]}) as span:
            log = self.log.topic(topic, create=self.auto_create)
            if log is None:
                raise ConfigError(f"unknown topic {topic!r} and this broker does not auto-create topics "
                                  f"(known: {sorted(self.log.topics)})")
            with tracer.start_as_current_span("log.append", attributes={"log.fsync": log.fsync}):
                appended = log.write(value, key, headers, producer_id, seq)
                await log.sync_through(appended.offset)  # acknowledged only once durable
            span.set_attribute("meshfabric.offset", appended.offset)
            span.set_attribute("meshfabric.duplicate", appended.duplicate)
        return {"topic": topic, "offset": appended.offset, "duplicate": appended.duplicate,
                "broker": self.node.name}

    async def fetch(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        topic = check_topic(args.get("topic"))
        offset, max_records = args.get("offset", 0), args.get("max_records", 100)
        if not (isinstance(offset, int) and offset >= 0 and isinstance(max_records, int) and max_records > 0):
            raise ConfigError("'offset' must be an int >= 0 and 'max_records' an int > 0")
        with self.node.telemetry.tracer.start_as_current_span(
                f"fetch {topic}", kind=SpanKind.SERVER, attributes=messaging_attributes(topic, "receive")):
            log = self.log.topic(topic, create=False)
            if log is None:
                return {"topic": topic, "records": [], "next_offset": offset, "end_offset": 0}
            found = log.read(offset, min(max_records, MAX_FETCH))
            return {"topic": topic, "records": [r.to_wire() for r in found],
                    "next_offset": offset + len(found), "end_offset": len(log)}

    async def list_topics(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"topics": {name: len(log) for name, log in self.log.topics.items()}}

    def close(self) -> None:
        self.log.close()
