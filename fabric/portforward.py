"""Forward a host TCP port to a Unix socket, byte for byte, from a background thread.

``meshfabric up`` runs its nodes in a loopback-only network namespace, where a browser on the
host cannot reach them. The console also listens on a Unix socket in its data directory, and a
Unix socket is a file, so it crosses namespaces: ``up`` serves ``127.0.0.1:8080`` on the host
and pipes every connection to that socket::

    with PortForward(console_dir / "console.sock", port=8080) as forward:
        print(forward.url)   # http://127.0.0.1:8080/
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side (so HTTP keep-alive and SSE just work)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class PortForward:
    """Accepts TCP connections on ``host:port`` and connects each to the Unix socket at ``path``."""

    def __init__(self, path: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.path = Path(path)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 5.0) -> PortForward:
        """Bind and serve in a daemon thread; ``ConfigError`` if the port cannot be had."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="portforward", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ConfigError(f"port forward to {self.path} did not start within {timeout}s")
        if self._error is not None:
            raise ConfigError(f"cannot listen on {self.host}:{self.port} to forward to {self.path}: "
                              f"{self._error}; pick another port (0 = any free port)") from None
        return self

    def close(self) -> None:
        """Stop accepting, drop open connections, and join the thread."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished on its own
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            server = await asyncio.start_server(self._accept, self.host, self.port)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)  # type: ignore[arg-type]
        try:
            try:
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(str(self.path))
            except OSError as exc:
                log.info("port forward: %s is not answering: %s", self.path, exc)
                return
            try:
                await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
            finally:
                upstream_writer.close()
        except asyncio.CancelledError:
            # ``close`` ends open connections (a browser's keep-alive, the console's event stream).
            # A handler that ends cancelled makes asyncio (3.11) print "Exception in callback"
            # with a traceback on every Ctrl-C of ``meshfabric up``: end it normally instead.
            pass
        finally:
            client_writer.close()
            self._connections.discard(task)  # type: ignore[arg-type]
