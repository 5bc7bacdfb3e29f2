"""A node's control socket: a Unix-domain socket in its data directory, JSON lines.

The CLI (``meshfabric directory``) and the test harness talk to a running node through it.
A Unix socket lives in the file system, so it works across network namespaces.
Request: ``{"op": "directory", ...}``; reply: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

from .errors import ControlError, FabricError

log = logging.getLogger(__name__)

Operation = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_LINE = 1024 * 1024


class ControlServer:
    """Serves named operations on a Unix socket."""

    def __init__(self, path: Path, operations: dict[str, Operation]) -> None:
        self.path = path
        self.operations = operations
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if self.path.exists():
            self.path.unlink()  # a stale socket from a killed run
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self._answer(line), default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object with an 'op'"}
        op = self.operations.get(request.get("op"))
        if op is None:
            return {"ok": False, "error": f"unknown op {request.get('op')!r}; known: {sorted(self.operations)}"}
        try:
            return {"ok": True, **await op(request)}
        except FabricError as exc:
            return {"ok": False, "error": str(exc), "type": type(exc).__name__}
        except Exception as exc:  # never let a control request crash the node
            log.exception("control op %s failed", request.get("op"))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}


async def request(path: str | os.PathLike[str], op: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one request to the node whose control socket is at ``path``; return its reply."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=MAX_LINE * 16), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ControlError(f"no node answers on control socket {path}: {exc}") from None
    try:
        writer.write(json.dumps({"op": op, **args}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ControlError(f"control request {op!r} on {path} failed: {exc!r}") from None
    finally:
        writer.close()
    if not line:
        raise ControlError(f"node at {path} closed the control socket without answering {op!r}")
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise ControlError(f"the answer on {path} to {op!r} is not a control reply: {line[:80]!r}")
    if not reply.get("ok"):
        raise ControlError(f"{op!r} failed on {path}: {reply.get('error')}")
    return reply


def request_sync(path: str | os.PathLike[str], op: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """``request`` for blocking code (the CLI, sync tests).

    Safe to call from a thread that runs an event loop: the request then runs on a loop of
    its own in a worker thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(request(path, op, timeout, **args))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, request(path, op, timeout, **args)).result()
