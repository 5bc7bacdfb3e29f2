"""The producer's send span: what it records of a produce's attempts, and the trace context it
sends. The transport here is a scripted stand-in (the produce path over real iroh is
``tests/integration/test_produce.py``'s)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace

from fabric import propagation
from fabric.errors import TransportError
from fabric.frames import Frame, Kind
from fabric.identity import Identity, node_name
from fabric.producer import Producer, Target
from fabric.telemetry import NodeLabels, Telemetry

NODE_ID = Identity.generate().node_id
LABELS = NodeLabels(node_name("mesh1", "gateway", NODE_ID), "mesh1", "gateway", NODE_ID)
BROKER = Target("mesh2.broker.abcdef", "b" * 64, ("127.0.0.1:1",))


class ScriptedTransport:
    """Fails the first ``failures`` requests, then acks each with the next offset; keeps them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[Frame] = []

    async def request(self, node_id: str, addrs: Any, alpn: bytes, frame: Frame, timeout: float) -> Frame:
        self.requests.append(frame)
        if len(self.requests) <= self.failures:
            raise TransportError("connection lost (scripted)")
        return Frame(Kind.RESPONSE, {"offset": 40 + len(self.requests)})


@pytest.mark.parametrize("failures", [0, 1, 2])
def test_the_send_span_records_the_attempts_the_retries_and_the_offset(failures):
    tel = Telemetry(LABELS)
    transport = ScriptedTransport(failures)
    producer = Producer(transport, tel.tracer)  # type: ignore[arg-type]
    ack = asyncio.run(producer.send(BROKER, "orders", b"v"))
    (send,) = [s for s in tel.recent.snapshot() if s.name == "send orders"]
    assert ack["offset"] == 41 + failures
    assert send.attributes["meshfabric.attempts"] == failures + 1
    assert send.attributes["meshfabric.offset"] == ack["offset"]
    assert [e.name for e in send.events] == ["retry"] * failures
    assert [e.attributes["attempt"] for e in send.events] == list(range(1, failures + 1))
    sent = {trace.get_current_span(propagation.extract(r.body["trace"])).get_span_context().span_id
            for r in transport.requests}
    assert sent == {send.context.span_id}  # every attempt carries the send span's context
    assert all(r.body["args"]["headers"] == r.body["trace"] for r in transport.requests)


def test_a_send_that_fails_every_attempt_says_so_on_its_span():
    tel = Telemetry(LABELS)
    producer = Producer(ScriptedTransport(failures=3), tel.tracer)  # type: ignore[arg-type]
    with pytest.raises(TransportError, match="after 3 attempts"):
        asyncio.run(producer.send(BROKER, "orders", b"v"))
    (send,) = [s for s in tel.recent.snapshot() if s.name == "send orders"]
    assert [e.name for e in send.events] == ["retry"] * 3 + ["exception"]
    assert "meshfabric.attempts" not in send.attributes and not send.status.is_ok
