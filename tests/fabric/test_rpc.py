"""A request's timeout travels with it: what the calls made on a caller's behalf may take
(``rpc.budget``), checked on the way in. The transport is a scripted stand-in (the real path
is ``tests/integration/test_produce.py``'s)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fabric import rpc
from fabric.errors import PeerTimeout
from fabric.frames import Frame, Kind


class RecordingTransport:
    """Answers every request at once and keeps it, with the timeout it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Frame, float]] = []

    async def request(self, node_id: str, addrs: Any, alpn: bytes, frame: Frame, timeout: float) -> Frame:
        self.calls.append((frame, timeout))
        return Frame(Kind.RESPONSE, {"ok": True})


def serve(operation: rpc.Operation, body: dict[str, Any]) -> Frame:
    """Serve one REQUEST frame with ``body`` through a router offering ``operation`` as "op"."""
    return asyncio.run(rpc.Router({"op": operation})("caller", Frame(Kind.REQUEST, body)))


def test_outside_a_served_request_a_call_gets_its_own_timeout_and_sends_it():
    transport = RecordingTransport()
    asyncio.run(rpc.call(transport, "b" * 64, (), b"alpn", "next", {}, timeout=5.0))  # type: ignore[arg-type]
    ((frame, timeout),) = transport.calls
    assert timeout == 5.0 and frame.body["timeout_ms"] == 5000
    assert rpc.budget(7.0) == 7.0


def test_a_call_made_serving_a_request_gets_at_most_what_is_left_of_its_callers_timeout():
    transport = RecordingTransport()
    seen: dict[str, float] = {}

    async def forward(remote: str, args: dict[str, Any]) -> dict[str, Any]:
        seen["budget"] = rpc.budget(5.0)
        await rpc.call(transport, "b" * 64, (), b"alpn", "next", {}, timeout=5.0)  # type: ignore[arg-type]
        return {}

    reply = serve(forward, {"op": "op", "args": {}, "timeout_ms": 1000})
    assert reply.kind is Kind.RESPONSE
    ((frame, timeout),) = transport.calls
    assert 0 < seen["budget"] <= 0.9  # a tenth kept for the answer's way back
    assert 0 < timeout <= seen["budget"] and frame.body["timeout_ms"] <= 900


def test_without_a_timeout_in_the_request_nothing_is_bounded():
    async def report(remote: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"budget": rpc.budget(5.0)}

    assert serve(report, {"op": "op", "args": {}}).body == {"budget": 5.0}


def test_a_task_the_operation_starts_is_not_bound_by_the_request():
    """A lookup started by one request and shared by later ones outlives the first."""
    async def start_a_task(remote: str, args: dict[str, Any]) -> dict[str, Any]:
        inner = await asyncio.ensure_future(_budget_of_a_task())
        return {"here": rpc.budget(5.0), "inner": inner}

    body = serve(start_a_task, {"op": "op", "args": {}, "timeout_ms": 1000}).body
    assert body["inner"] == 5.0 and body["here"] <= 0.9


async def _budget_of_a_task() -> float:
    return rpc.budget(5.0)


def test_a_request_past_its_callers_timeout_calls_nobody():
    transport = RecordingTransport()

    async def late(remote: str, args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)  # outlive the 1 ms budget
        with pytest.raises(PeerTimeout, match="no time left to call 'next'"):
            await rpc.call(transport, "b" * 64, (), b"alpn", "next", {})  # type: ignore[arg-type]
        return {}

    assert serve(late, {"op": "op", "args": {}, "timeout_ms": 1}).kind is Kind.RESPONSE
    assert transport.calls == []


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1000", True, {}, [1000]])
def test_a_bad_timeout_is_a_bad_request_and_the_operation_does_not_run(bad):
    ran: list[bool] = []

    async def operation(remote: str, args: dict[str, Any]) -> dict[str, Any]:
        ran.append(True)
        return {}

    reply = serve(operation, {"op": "op", "args": {}, "timeout_ms": bad})
    assert reply.kind is Kind.ERROR and reply.body["code"] == "bad_request"
    assert "'timeout_ms' must be a positive integer" in reply.body["message"]
    assert ran == []
