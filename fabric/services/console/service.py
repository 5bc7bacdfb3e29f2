"""The ``console`` node type: a web console served from the node's own event loop.

It listens on ``--console-host``/``--console-port`` (127.0.0.1, any free port by default) and
on a Unix socket ``<data-dir>/console.sock`` (a file, so it crosses network namespaces: ``meshfabric
up`` forwards a host port to it). Its URL is in the node's ready line and ``status``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ..base import Service
from .collector import Collector, Forwarder, LocalTap, forward_url
from .store import SpanStore
from .topology import EdgeTracker

if TYPE_CHECKING:
    from aiohttp import web

    from ...node_config import NodeConfig

log = logging.getLogger(__name__)

SOCKET_NAME = "console.sock"


def check_console_settings(cfg: NodeConfig) -> None:
    """Refuse bad console flags before the node binds anything (any node type may carry them)."""
    if not 0 <= cfg.console_port <= 65535:
        raise ConfigError(f"--console-port {cfg.console_port} is not a TCP port: use 0 (any free port) to 65535")
    if not cfg.console_host or any(c.isspace() for c in cfg.console_host):
        raise ConfigError(f"--console-host {cfg.console_host!r} is not a host: use an address such as 127.0.0.1")
    if cfg.otlp_forward is not None:
        forward_url(cfg.otlp_forward)
    if cfg.console_token is not None and len(cfg.console_token) < 8:
        raise ConfigError("--console-token must be at least 8 characters (it guards cluster-changing actions)")


class ConsoleService(Service):
    """Collects spans (OTLP), keeps them bounded, and serves the Cache, Topology and Traces views."""

    def __init__(self, node) -> None:
        super().__init__(node)
        cfg = node.config
        self.host, self.port, self.token = cfg.console_host, cfg.console_port, cfg.console_token
        self.store = SpanStore()
        self.edges = EdgeTracker()
        self.forwarder = Forwarder(cfg.otlp_forward) if cfg.otlp_forward else None
        self.collector = Collector(self.store, self.edges, self.forwarder)
        self.socket_path = cfg.data_dir / SOCKET_NAME
        self.push_interval = 0.5  # seconds between live directory snapshots to each open page
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._tap: LocalTap | None = None

    # -- what it tells --------------------------------------------------------

    def ready_info(self) -> dict[str, Any]:
        return {"console": self.url, "console_socket": str(self.socket_path)} if self.url else {}

    def control_operations(self) -> dict[str, Any]:
        async def console(_: dict[str, Any]) -> dict[str, Any]:
            return self.describe()
        return {"console": console}

    def describe(self) -> dict[str, Any]:
        """The console's own counters, for ``/api/status`` and the ``console`` control op."""
        return {
            "url": self.url, "socket": str(self.socket_path), "actions_enabled": self.token is not None,
            "spans": len(self.store), "traces": self.store.trace_count, "max_spans": self.store.max_spans,
            "store": dict(self.store.stats), "collector": dict(self.collector.stats),
            "edges": len(self.edges.edges()),
            "forward": {"url": self.forwarder.url, **self.forwarder.stats} if self.forwarder else None,
        }

    def directory(self) -> list[dict[str, Any]]:
        """The console node's directory, entry by entry (``Entry.as_dict``), and in backbone
        mode every other mesh's members as the backbone knows them (from cache; stale meshes
        are refetched in the background)."""
        now = self.node.clock()
        rows = [entry.as_dict(now) for entry in self.node.directory.entries()]
        if self.node.backbone is not None:
            rows += self.node.backbone.known_entries()
        return rows

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        # aiohttp is imported here, when a console starts: other node types never load it.
        from aiohttp import web

        from .web import build_app

        self._tap = LocalTap(asyncio.get_running_loop(), self.collector.accept)
        self._tap.take(self.node.telemetry.recent.snapshot())  # the boot spans ended so far
        self.node.telemetry.provider.add_span_processor(self._tap)
        # auto_decompress off: OTLP bodies are decompressed (with a size bound) by fabric.otlp,
        # and forwarded exactly as they came.
        self._runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=1.0,
                                     auto_decompress=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"the console cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                              "pass another --console-port (0 = any free port) or --console-host") from None
        self.socket_path.unlink(missing_ok=True)  # a stale socket from a killed run
        try:
            await web.UnixSite(self._runner, str(self.socket_path)).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"the console cannot serve on {self.socket_path}: {exc}; "
                              "use a shorter --data-dir (Unix socket paths are limited to ~100 bytes)") from None
        os.chmod(self.socket_path, 0o600)
        port = next(addr[1] for addr in self._runner.addresses if isinstance(addr, tuple))
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        if self.forwarder is not None:
            await self.forwarder.start()
        log.info("console at %s (and %s)", self.url, self.socket_path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.forwarder is not None:
            await self.forwarder.close()
        if self._tap is not None:
            self._tap.shutdown()
        self.socket_path.unlink(missing_ok=True)
