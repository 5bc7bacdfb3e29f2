"""The broker: accepts produced records into its durable log and serves them back.

Operations on ``meshfabric/broker/1``:

* ``produce {topic, value, key?, headers?, producer_id?, seq?}`` → ``{topic, offset, duplicate}``
  after the record is fsynced. A retry with the same ``(producer_id, seq)`` returns the first
  offset with ``duplicate: true`` and stores nothing.
* ``produce_batch {topic, records: [{value, key?, headers?}], headers?, producer_id?, seq?}`` →
  ``{topic, offsets, duplicates}``: one append and one fsync for the whole batch; the batch's
  ``headers`` (its trace context) go with every record, under the record's own. Instead of
  ``records``, ``values: [value]`` (bare values, no keys: what a node's producer sends).
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
MAX_BATCH = 10_000

# Test-only switch for the chaos harness's planted bug: acknowledge before the data is durable.
UNSAFE_NO_FSYNC_ENV = "MESHFABRIC_UNSAFE_NO_FSYNC"


def _check_headers(headers: Any) -> dict[str, str]:
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigError("'headers' must map strings to strings")
    return headers


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
        # A commit waits a loop turn for other records only if requests wait to be handled.
        self.log = Log(cfg.data_dir / "log", fsync=fsync,
                       others_waiting=lambda: self.node.transport.requests_waiting > 0)
        self.max_record_bytes = cfg.max_record_bytes
        self.auto_create = cfg.auto_create_topics
        for topic in cfg.topics:
            self.log.topic(topic, create=True)

    def operations(self) -> dict[str, Operation]:
        return {"produce": self.produce, "produce_batch": self.produce_batch, "fetch": self.fetch,
                "topics": self.list_topics}

    def meta(self) -> dict[str, Any]:
        return {"topics": sorted(self.log.topics)}

    async def produce(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        topic = check_topic(args.get("topic"))
        record = self._check_record(args)
        result = await self._append(remote, topic, [record], *self._check_producer(args))
        return {"topic": topic, "offset": result["offsets"][0], "duplicate": result["duplicates"][0],
                "broker": self.node.name}

    async def produce_batch(self, remote: str, args: dict[str, Any]) -> dict[str, Any]:
        """Many records, one request, one append, one fsync: the fast path for throughput.

        The records come as ``records`` (each ``{value, key?, headers?}``) or as ``values`` (bare
        values, each with the batch's ``headers`` and no key: what a node's producer sends, a
        dict a record fewer to encode, decode and check on each side)."""
        topic = check_topic(args.get("topic"))
        shared = _check_headers(args.get("headers") or {})
        values, batch = args.get("values"), args.get("records")
        if values is not None:
            records = self._check_values(values, shared)
        elif isinstance(batch, list) and 0 < len(batch) <= MAX_BATCH:
            records = [self._check_record(r if isinstance(r, dict) else {}, shared) for r in batch]
        else:
            raise ConfigError(f"'records' (or 'values') must be a list of 1-{MAX_BATCH} records")
        return {"topic": topic, **await self._append(remote, topic, records, *self._check_producer(args)),
                "broker": self.node.name}

    def _check_values(self, values: Any, headers: dict[str, str]) -> list[tuple[bytes, None, dict[str, str]]]:
        """A batch of bare values as records (no key, the batch's headers)."""
        if not isinstance(values, list) or not 0 < len(values) <= MAX_BATCH:
            raise ConfigError(f"'values' must be a list of 1-{MAX_BATCH} values")
        for value in values:
            if not isinstance(value, bytes):
                raise ConfigError("each of 'values' must be bytes")
            self._check_size(len(value))
        return [(value, None, headers) for value in values]

    def _check_record(self, args: dict[str, Any], shared: dict[str, str] | None = None,
                      ) -> tuple[bytes, bytes | None, dict[str, str]]:
        """``(value, key, headers)`` of a record; ``shared``: the batch's headers, checked once
        (a batch's trace context travels once, not once per record), under the record's own."""
        value, key, headers = args.get("value"), args.get("key"), args.get("headers")
        if not isinstance(value, bytes):
            raise ConfigError("'value' must be bytes")
        if key is not None and not isinstance(key, bytes):
            raise ConfigError("'key' must be bytes or absent")
        headers = _check_headers(headers) if headers else {}
        if shared:
            headers = {**shared, **headers} if headers else shared
        self._check_size(len(value) + len(key or b""))
        return value, key, headers

    def _check_size(self, size: int) -> None:
        """A record's value and key, ``size`` bytes in all, within this broker's limit."""
        if size > self.max_record_bytes:
            raise ConfigError(f"record is {size} bytes, over this broker's {self.max_record_bytes}-byte limit")

    @staticmethod
    def _check_producer(args: dict[str, Any]) -> tuple[str | None, int | None]:
        producer_id, seq = args.get("producer_id"), args.get("seq")
        if (producer_id is None) != (seq is None) or (producer_id is not None and not (
                isinstance(producer_id, str) and isinstance(seq, int) and seq >= 0)):
            raise ConfigError("'producer_id' (string) and 'seq' (int >= 0) go together")
        return producer_id, seq

    async def _append(self, remote: str, topic: str, records: list[tuple[bytes, bytes | None, dict[str, str]]],
                      producer_id: str | None, seq: int | None) -> dict[str, Any]:
        """Append records (the i-th with sequence ``seq + i``) and return once they are durable."""
        tracer = self.node.telemetry.tracer
        attributes = {**messaging_attributes(topic, "receive"), "messaging.client_id": remote[:16]}
        if len(records) > 1:
            attributes["messaging.batch.message_count"] = len(records)
        with tracer.start_as_current_span(f"receive {topic}", kind=SpanKind.CONSUMER, attributes=attributes) as span:
            log = self.log.topic(topic, create=self.auto_create)
            if log is None:
                raise ConfigError(f"unknown topic {topic!r} and this broker does not auto-create topics "
                                  f"(known: {sorted(self.log.topics)})")
            # The append and its commit are this span's: a child span for them cost a produce
            # 2-4% of its throughput with every span exported (docs/performance-rounds.md,
            # twenty-third round) and told little more than this one's duration.
            span.set_attribute("log.fsync", log.fsync)
            written = log.write_many(records, producer_id, seq)
            await log.sync_through(max(written.offsets))  # acknowledged only once durable
            span.set_attribute("meshfabric.offset", written.offsets[0])
            span.set_attribute("meshfabric.duplicate", any(written.duplicates))
        return {"offsets": written.offsets, "duplicates": written.duplicates}

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
