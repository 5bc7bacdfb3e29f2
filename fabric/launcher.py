"""Run nodes as real OS processes: start, wait until ready, signal, stop.

Used by ``meshfabric up`` and by anything that wants a node in its own process (the pytest
harness included). A node process prints one JSON line on stdout when it is ready; its log
goes to ``<data_dir>/node.log``. Where it can, a node is forked from a process that has its
code imported already (``fabric/forkserver.py``), not started as a new interpreter.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import control, forkserver
from .errors import FabricError

log = logging.getLogger(__name__)


class NodeStartError(FabricError):
    """A node process exited or stayed silent before it said it was ready."""


def node_args(mesh: str, type: str, data_dir: Path, bootstrap: Sequence[str] = (),
              watch: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
    """The ``meshfabric`` arguments that run one node."""
    args = ["node", "--mesh", mesh, "--type", type, "--data-dir", str(data_dir)]
    for peer in bootstrap:
        args += ["--bootstrap", peer]
    for m in watch:
        args += ["--watch-mesh", m]
    return args + list(extra)


class NodeProcess:
    """One node in its own process. ``prefix`` wraps the command (e.g. ``ip netns exec NS``).
    ``proc`` is a ``subprocess.Popen``, or a ``forkserver.ForkedProcess`` with the same ``pid``,
    ``stdout``, ``poll`` and ``wait``."""

    def __init__(self, mesh: str, type: str, data_dir: Path, bootstrap: Sequence[str] = (),
                 watch: Sequence[str] = (), env: dict[str, str] | None = None,
                 prefix: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
        self.mesh, self.type, self.data_dir = mesh, type, Path(data_dir)
        self.bootstrap, self.watch = list(bootstrap), list(watch)
        self.env, self.prefix, self.extra = env, list(prefix), list(extra)
        self.proc: subprocess.Popen | forkserver.ForkedProcess | None = None
        self.info: dict[str, Any] = {}

    @property
    def log_path(self) -> Path:
        return self.data_dir / "node.log"

    @property
    def control_path(self) -> Path:
        return control.socket_path(self.data_dir)

    @property
    def name(self) -> str:
        return self.info.get("name", f"{self.mesh}.{self.type}.?")

    @property
    def address(self) -> str:
        return self.info["address"]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "NodeProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = node_args(self.mesh, self.type, self.data_dir, self.bootstrap, self.watch, self.extra)
        env = {**os.environ, **(self.env or {})}
        with open(self.log_path, "ab") as node_log:
            self.proc = self._fork(args, env, node_log.fileno()) or subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "fabric", *args], stdout=subprocess.PIPE, stderr=node_log,
                env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def _fork(self, argv: list[str], env: dict[str, str], log_fd: int) -> forkserver.ForkedProcess | None:
        """The node forked from a fork server, or ``None`` where it must start afresh: another
        prefix than ``ip netns exec``, other interpreter settings or import-time variables
        (``forkserver.ForkServer.can_fork``), the server switched off or failing (logged)."""
        forkable, netns = forkserver.netns_of(self.prefix)
        if not (forkable and forkserver.enabled(env)):
            return None
        try:
            server = forkserver.server_for(env, self.type)
            if server is None:
                return None
            read_end, write_end = os.pipe()
            try:
                proc = server.spawn(argv, env, write_end, log_fd, netns=netns)
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)
        except forkserver.ForkServerError as exc:
            log.warning("starting %s.%s as a new process: %s", self.mesh, self.type, exc)
            return None
        proc.stdout = open(read_end, "rb")  # noqa: SIM115 - read until the node exits, closed by stop()
        return proc

    def wait_ready(self, timeout: float = 15.0) -> dict[str, Any]:
        """Block until the node prints its ready line; raise ``NodeStartError`` otherwise."""
        assert self.proc is not None and self.proc.stdout is not None, "start() first"
        deadline = time.monotonic() + timeout
        buffer = b""
        fd = self.proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeStartError(f"{self.mesh}.{self.type} not ready after {timeout}s\n{self.log_tail()}")
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.proc.wait()
                raise NodeStartError(f"{self.mesh}.{self.type} exited with {code} before ready\n{self.log_tail()}")
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("event") == "ready":
                    self.info = event
                    return event

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(f"  | {line}" for line in text[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)  # type: ignore[union-attr]

    def kill(self) -> None:
        """SIGKILL: no leave announcement, no flush."""
        self.signal(signal.SIGKILL)
        self._reap(5.0)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (a clean leave), then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)  # a paused node cannot handle SIGTERM
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode
        finally:
            self._close_pipe()

    def _reap(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)  # type: ignore[union-attr]
        finally:
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
