"""Request/response operations over a service's ALPN, with trace context on the wire.

A request is a REQUEST frame ``{"op": name, "args": {...}, "trace": {W3C headers},
"timeout_ms": n}``; the answer is a RESPONSE frame (the result map) or an ERROR frame
``{"code", "message"}``. Trace context is injected and extracted with the OpenTelemetry
propagators, so the server's spans are children of the caller's.

A request carries its caller's timeout, and the calls its operation makes on the caller's
behalf get at most what is left of it (``budget``), less a tenth to carry the answer back: a
gateway forwarding a produce to a dead broker gives up when its client does, answers why, and
ends its spans then, instead of working on for its own, longer timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any, Awaitable, Callable, Mapping

from opentelemetry import context as otel_context

from . import propagation
from .errors import (ConfigError, FabricError, FrameError, PeerTimeout, RemoteError, ResolveError,
                     TransportError)
from .frames import Frame, Kind
from .transport import Transport, error_frame

log = logging.getLogger(__name__)

Operation = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""``operation(remote_node_id, args) -> result``."""

ANSWER_SHARE = 0.9  # of a caller's timeout, what serving its request may take (the rest: the way back)
# The task serving a request and when its caller gives up (time.monotonic()); only that task's
# own calls are bounded by it, not tasks it starts (a lookup they share outlives the request).
_serving: ContextVar[tuple[asyncio.Task | None, float] | None] = ContextVar("meshfabric_serving", default=None)


def budget(timeout: float) -> float:
    """``timeout``, or what is left of the request this task is serving if that is less
    (never below zero): the most a call made on a caller's behalf may take."""
    serving = _serving.get()
    if serving is None or serving[0] is not asyncio.current_task():
        return timeout
    return max(0.0, min(timeout, serving[1] - time.monotonic()))


_CODES: list[tuple[type[FabricError], str]] = [
    (ConfigError, "bad_request"), (ResolveError, "unknown_target"), (TransportError, "unreachable"),
]


def code_for(exc: FabricError) -> str:
    if isinstance(exc, RemoteError):
        return exc.code
    return next((code for cls, code in _CODES if isinstance(exc, cls)), "failed")


class Router:
    """Dispatches REQUEST frames to named operations, inside the caller's trace context."""

    def __init__(self, operations: Mapping[str, Operation]) -> None:
        self.operations = dict(operations)

    async def __call__(self, remote: str, frame: Frame) -> Frame:
        if frame.kind is not Kind.REQUEST:
            raise FrameError(f"expected a REQUEST frame, got {frame.kind.name}")
        op_name, args = frame.body.get("op"), frame.body.get("args", {})
        operation = self.operations.get(op_name) if isinstance(op_name, str) else None
        if operation is None:
            return error_frame(f"unknown operation {op_name!r}; this service offers {sorted(self.operations)}",
                               "unknown_op")
        if not isinstance(args, dict):
            return error_frame("'args' must be a map", "bad_request")
        timeout_ms = frame.body.get("timeout_ms")
        if timeout_ms is not None and (type(timeout_ms) is not int or timeout_ms <= 0):
            return error_frame(f"'timeout_ms' must be a positive integer (the caller's timeout), got {timeout_ms!r}",
                               "bad_request")
        serving = None if timeout_ms is None else _serving.set(
            (asyncio.current_task(), time.monotonic() + timeout_ms * ANSWER_SHARE / 1000))
        token = otel_context.attach(propagation.extract(frame.body.get("trace")))
        try:
            return Frame(Kind.RESPONSE, await operation(remote, args))
        except FabricError as exc:
            return error_frame(str(exc), code_for(exc))
        finally:
            otel_context.detach(token)
            if serving is not None:
                _serving.reset(serving)


async def call(transport: Transport, node_id: str, addrs: list[str] | tuple[str, ...], alpn: bytes,
               op: str, args: dict[str, Any], timeout: float = 5.0,
               trace: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``op`` on a peer's service; raises ``RemoteError`` if it answers with an error.

    ``timeout``: at most; inside a request being served, at most what is left of it (``budget``).
    ``trace``: the current context's headers, if the caller has them already.
    """
    timeout = budget(timeout)
    if timeout <= 0:
        raise PeerTimeout(f"no time left to call {op!r} on {node_id[:6]}: the request being served is past "
                          "its caller's timeout")
    request = Frame(Kind.REQUEST, {"op": op, "args": args, "trace": propagation.inject() if trace is None else trace,
                                   "timeout_ms": max(1, int(timeout * 1000))})
    reply = await transport.request(node_id, addrs, alpn, request, timeout)
    if reply.kind is Kind.ERROR:
        raise RemoteError(str(reply.body.get("code", "failed")), str(reply.body.get("message", "")))
    if reply.kind is not Kind.RESPONSE:
        raise FrameError(f"expected a RESPONSE to {op!r}, got {reply.kind.name}")
    return reply.body
