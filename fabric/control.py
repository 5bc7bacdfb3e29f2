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
import socket
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from .errors import ControlError, FabricError
from .telemetry import span_to_dict

log = logging.getLogger(__name__)

Operation = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_LINE = 1024 * 1024
# A Unix socket's path is bound as given (relative or absolute) into ``sun_path``: 108 bytes on
# Linux, 104 on the BSDs and macOS, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = (108 if sys.platform.startswith("linux") else 104) - 1


def socket_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the node with data directory ``data_dir`` serves its control socket."""
    return Path(data_dir) / "control.sock"


def socket_path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be a Unix socket's path (too long), or ``None`` if it can."""
    size = len(os.fsencode(path))
    if size <= MAX_SOCKET_PATH_BYTES:
        return None
    return f"{os.fspath(path)} is {size} bytes long; a Unix socket's path holds at most {MAX_SOCKET_PATH_BYTES}"


class ControlServer:
    """Serves named operations on a Unix socket."""

    def __init__(self, path: Path, operations: dict[str, Operation]) -> None:
        self.path = path
        self.operations = operations
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen at ``path``, owner only (mode 0600 before the first connection can come)."""
        path = str(self.path)
        try:
            os.unlink(path)  # a stale socket from a killed run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            raise

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


def node_operations(node: Any) -> dict[str, Operation]:
    """What a node serves here: ``status``, ``directory``, ``spans``, ``backbone`` (a backbone
    seat: the meshes on it; with ``members: true`` every other mesh's members too, ``"cached"``
    as far as they are cached, without waiting), and its services' own operations."""

    async def status(_: dict[str, Any]) -> dict[str, Any]:
        return node.status()

    async def directory(request: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        entries = node.directory.entries(mesh=request.get("mesh"))
        return {"name": node.name, "entries": [e.as_dict(now) for e in entries]}

    async def spans(_: dict[str, Any]) -> dict[str, Any]:
        return {"spans": [span_to_dict(s) for s in node.telemetry.recent.snapshot()]}

    async def backbone(request: dict[str, Any]) -> dict[str, Any]:
        seat = node.backbone
        reply: dict[str, Any] = {"name": node.name, "meshes": seat.meshes(), **seat.status()}
        if request.get("members") == "cached":
            reply["entries"] = seat.known_entries()
        elif request.get("members"):
            reply["entries"] = await seat.entries()
        return reply

    ops: dict[str, Operation] = {"status": status, "directory": directory, "spans": spans}
    if node.backbone is not None:
        ops["backbone"] = backbone
    for service in node.services:
        ops.update(service.control_operations())
    return ops


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
