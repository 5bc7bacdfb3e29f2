"""Request/response operations over a service's ALPN, with trace context on the wire.

A request is a REQUEST frame ``{"op": name, "args": {...}, "trace": {W3C headers}}``; the
answer is a RESPONSE frame (the result map) or an ERROR frame ``{"code", "message"}``.
Trace context is injected and extracted with the OpenTelemetry propagators, so the server's
spans are children of the caller's.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping

from opentelemetry import context as otel_context

from . import propagation
from .errors import (ConfigError, FabricError, FrameError, RemoteError, ResolveError,
                     TransportError)
from .frames import Frame, Kind
from .transport import Transport, error_frame

log = logging.getLogger(__name__)

Operation = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""``operation(remote_node_id, args) -> result``."""

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
        token = otel_context.attach(propagation.extract(frame.body.get("trace")))
        try:
            return Frame(Kind.RESPONSE, await operation(remote, args))
        except FabricError as exc:
            return error_frame(str(exc), code_for(exc))
        finally:
            otel_context.detach(token)


async def call(transport: Transport, node_id: str, addrs: list[str] | tuple[str, ...], alpn: bytes,
               op: str, args: dict[str, Any], timeout: float = 5.0,
               trace: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``op`` on a peer's service; raises ``RemoteError`` if it answers with an error.

    ``trace``: the current context's headers, if the caller has them already.
    """
    request = Frame(Kind.REQUEST, {"op": op, "args": args, "trace": propagation.inject() if trace is None else trace})
    reply = await transport.request(node_id, addrs, alpn, request, timeout)
    if reply.kind is Kind.ERROR:
        raise RemoteError(str(reply.body.get("code", "failed")), str(reply.body.get("message", "")))
    if reply.kind is not Kind.RESPONSE:
        raise FrameError(f"expected a RESPONSE to {op!r}, got {reply.kind.name}")
    return reply.body
