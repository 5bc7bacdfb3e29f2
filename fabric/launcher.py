"""Run nodes as real OS processes: start, wait until ready, signal, stop.

Used by ``meshfabric up`` and by anything that wants a node in its own process (the pytest
harness included). A node process prints one JSON line on stdout when it is ready; its log
goes to ``<data_dir>/node.log``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import control
from .errors import FabricError


class NodeStartError(FabricError):
    """A node process exited or stayed silent before it said it was ready."""


def node_command(mesh: str, type: str, data_dir: Path, bootstrap: Sequence[str] = (),
                 watch: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
    """The argv that runs one node with this Python interpreter."""
    cmd = [sys.executable, "-m", "fabric", "node", "--mesh", mesh, "--type", type,
           "--data-dir", str(data_dir)]
    for peer in bootstrap:
        cmd += ["--bootstrap", peer]
    for m in watch:
        cmd += ["--watch-mesh", m]
    return cmd + list(extra)


class NodeProcess:
    """One node in its own process. ``prefix`` wraps the command (e.g. ``ip netns exec NS``)."""

    def __init__(self, mesh: str, type: str, data_dir: Path, bootstrap: Sequence[str] = (),
                 watch: Sequence[str] = (), env: dict[str, str] | None = None,
                 prefix: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
        self.mesh, self.type, self.data_dir = mesh, type, Path(data_dir)
        self.bootstrap, self.watch = list(bootstrap), list(watch)
        self.env, self.prefix, self.extra = env, list(prefix), list(extra)
        self.proc: subprocess.Popen | None = None
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
        cmd = self.prefix + node_command(self.mesh, self.type, self.data_dir, self.bootstrap,
                                         self.watch, self.extra)
        env = {**os.environ, **(self.env or {})}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

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
