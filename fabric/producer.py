"""Sending records to a broker: one PRODUCER span per record, idempotent retries.

Each ``Producer`` has a random id and numbers its records; a retry after a timeout reuses the
number, so the broker stores the record once however often it arrives.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Callable

from opentelemetry.trace import Span, SpanKind, Tracer

from . import propagation, rpc
from .errors import FabricError, RemoteError, TransportError
from .services.broker import ALPN as BROKER_ALPN
from .services.broker import messaging_attributes
from .transport import Transport


@dataclass(frozen=True)
class Target:
    """A broker to send to."""

    name: str
    node_id: str
    addrs: tuple[str, ...]


class Producer:
    """Sends records as one producer id. ``down(node_id)`` says why a broker is believed down
    (``None``: alive, or not known here); see ``_call`` for what it changes."""

    def __init__(self, transport: Transport, tracer: Tracer, producer_id: str | None = None,
                 down: Callable[[str], str | None] = lambda node_id: None) -> None:
        self.transport = transport
        self.tracer = tracer
        self.producer_id = producer_id or secrets.token_hex(8)
        self.down = down
        self._seq = 0

    def next_seq(self, count: int = 1) -> int:
        """Reserve ``count`` consecutive sequence numbers; return the first."""
        seq, self._seq = self._seq, self._seq + count
        return seq

    async def send(self, broker: Target, topic: str, value: bytes, key: bytes | None = None,
                   headers: dict[str, str] | None = None, *, seq: int | None = None,
                   producer_id: str | None = None, timeout: float = 5.0, attempts: int = 3) -> dict[str, Any]:
        """Produce one record to ``broker``; retried on transport failures with the same sequence."""
        seq = self.next_seq() if seq is None else seq
        with self._span(broker, topic, seq, 1) as span:
            # The record carries this span's context, so its consumers continue the trace; so
            # does the request (the same headers, injected once).
            context = propagation.inject()
            args = {"topic": topic, "value": value, "key": key, "headers": {**(headers or {}), **context},
                    "producer_id": producer_id or self.producer_id, "seq": seq}
            ack = await self._call(span, broker, "produce", args, timeout, attempts, context)
            span.set_attribute("meshfabric.offset", ack["offset"])
            return ack

    async def send_batch(self, broker: Target, topic: str, values: list[bytes], *, timeout: float = 5.0,
                         attempts: int = 3) -> dict[str, Any]:
        """Produce many records in one request (one append, one fsync on the broker)."""
        seq = self.next_seq(len(values))
        with self._span(broker, topic, seq, len(values)) as span:
            headers = propagation.inject()  # sent once: the broker stores it with every record
            args = {"topic": topic, "values": values, "headers": headers,
                    "producer_id": self.producer_id, "seq": seq}
            return await self._call(span, broker, "produce_batch", args, timeout, attempts, headers)

    def _span(self, broker: Target, topic: str, seq: int, count: int):
        attributes = {**messaging_attributes(topic, "send"), "peer.service": broker.name,
                      "server.address": ",".join(broker.addrs), "meshfabric.seq": seq}
        if count > 1:
            attributes["messaging.batch.message_count"] = count
        return self.tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes)

    async def _call(self, span: Span, broker: Target, op: str, args: dict[str, Any], timeout: float,
                    attempts: int, context: dict[str, str] | None = None) -> dict[str, Any]:
        """Call the broker, retrying transport failures with the same arguments (and sequence);
        the attempts and retries are noted on ``span`` (the send's).

        Each attempt gets ``timeout / attempts`` (of what is left of the request this serves,
        if less: ``rpc.budget``): a broker that was killed and restarted leaves
        a QUIC connection that swallows requests until its 30 s idle timeout, and a timed-out
        attempt drops it, so the next attempt dials the new process.

        A broker the directory holds suspect or has removed gets one more attempt (a process
        that restarted at the same address answers it; the directory may not have heard of it
        yet), not all of them: a dead one would swallow each until its timeout, and the caller
        hears why (``the broker is suspected down``) instead of a timeout seconds later.
        """
        timeout = rpc.budget(timeout)  # inside a request served: no longer than its caller waits
        last: FabricError | None = None
        tried_while_down = False
        for attempt in range(1, attempts + 1):
            try:
                ack = await rpc.call(self.transport, broker.node_id, broker.addrs, BROKER_ALPN, op, args,
                                     timeout / attempts, context)
                span.set_attribute("meshfabric.attempts", attempt)
                return ack
            except RemoteError:
                raise  # the broker answered: retrying would not change its mind
            except TransportError as exc:
                last = exc
                reason = self.down(broker.node_id)
                if reason is not None and tried_while_down:
                    raise TransportError(f"produce to {broker.name} failed: the broker is {reason} ({exc}); "
                                         "the record may or may not be stored") from exc
                tried_while_down = reason is not None
                span.add_event("retry", {"attempt": attempt, "error": str(exc)})
        raise TransportError(f"produce to {broker.name} failed after {attempts} attempts: {last}")
