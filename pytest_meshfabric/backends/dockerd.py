"""The Docker daemon of the docker backend: a private ``dockerd`` in the tests' network namespace.

The tests run inside ``unshare -n``; a daemon started elsewhere (systemd, the host's network
namespace) puts its bridges where the test process cannot reach them. So unless ``DOCKER_HOST``
names a daemon, the backend starts its own: ``dockerd`` with every path under one temp dir
(``$TMPDIR/mfd-<worker>-<pid>-*``: socket, data root, exec root, pid file), its own containerd
namespace, and no iptables, NAT, IP forwarding or ``docker0`` (the backend creates the one
network it needs; nothing leaves the machine). It starts in ~0.3 s here and stops with the
backend, after the backend removed its containers (a cluster kept by ``--fabric-keep`` keeps
its daemon; the cleanup script stops it). If the test process dies outright (SIGKILL), the
next run stops the orphaned daemon, which stops its containers, and removes its directory.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from fabric.errors import FabricError

from ..waiting import HarnessTimeout, wait_until
from .netns import _alive

#: The API version the backend speaks (Debian 12's docker.io 20.10 serves 1.41; newer ones accept it).
API_VERSION = "1.41"
START_TIMEOUT = 20.0


class DockerUnavailable(FabricError):
    """No Docker daemon can be reached or started here; the message says why."""


@functools.cache
def unavailable_reason() -> str | None:
    """Why the docker backend cannot run here (``None``: it can). Probed once, cheaply."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the `docker` Python SDK is not installed (pip install docker)"
    if shutil.which("docker") is None:
        return "the docker command-line client is not installed (Debian: apt-get install -y docker.io)"
    if os.environ.get("DOCKER_HOST"):
        return None
    if os.geteuid() != 0:
        return "the tests do not run as root (a private dockerd needs root; or set DOCKER_HOST)"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian: apt-get install -y docker.io; .ci/run does it)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    return None


def sweep_stale() -> list[str]:
    """Remove the daemon dirs of runs whose process is gone (their dockerd is stopped first)."""
    swept = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "mfd-*-*-*")):
        parts = Path(path).name.split("-")
        if len(parts) < 4 or not parts[2].isdigit() or _alive(int(parts[2])):
            continue
        _stop_pidfile(Path(path) / "dockerd.pid", timeout=10.0)
        shutil.rmtree(path, ignore_errors=True)
        swept.append(path)
    return swept


def _stop_pidfile(pidfile: Path, timeout: float) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not _alive(pid), timeout, f"dockerd {pid} to stop")
    except ProcessLookupError:
        pass
    except HarnessTimeout:
        os.kill(pid, signal.SIGKILL)


class DockerDaemon:
    """A Docker API endpoint: the one ``DOCKER_HOST`` names, or a private ``dockerd`` started here."""

    def __init__(self, worker: str = "main") -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise DockerUnavailable(reason)
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        if os.environ.get("DOCKER_HOST"):
            self.url = os.environ["DOCKER_HOST"]
        else:
            sweep_stale()
            self.dir = Path(tempfile.mkdtemp(prefix=f"mfd-{worker.replace('-', '_')}-{os.getpid()}-"))
            self.url = f"unix://{self.dir}/docker.sock"
            self._start()
        self.client = self._client()

    @property
    def private(self) -> bool:
        return self.dir is not None

    def _client(self) -> Any:
        import docker
        return docker.DockerClient(base_url=self.url, version=API_VERSION, timeout=60)

    def _start(self) -> None:
        assert self.dir is not None
        d = self.dir
        ns = f"mf{os.getpid()}"
        cmd = ["dockerd", "--host", self.url, "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
               "--pidfile", str(d / "dockerd.pid"), "--containerd-namespace", ns,
               "--containerd-plugins-namespace", f"{ns}p", "--bridge", "none", "--iptables=false",
               "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false"]
        with open(d / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            wait_until(self._answers, START_TIMEOUT, f"dockerd to answer on {self.url}",
                       describe=lambda _: self.log_tail())
        except HarnessTimeout as exc:
            self.stop()
            raise DockerUnavailable(f"a private dockerd did not start: {exc}") from None

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise DockerUnavailable(f"dockerd exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return bool(self._client().ping())
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    def log_tail(self, lines: int = 8) -> str:
        if self.dir is None:
            return ""
        try:
            text = (self.dir / "dockerd.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no dockerd log)"
        return "\n".join(f"  | {line}" for line in text[-lines:])

    def stop(self) -> None:
        """Stop a private daemon and remove its directory (nothing to do for ``DOCKER_HOST``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def describe(self) -> str:
        return f"private dockerd at {self.url}" if self.private else f"the daemon at DOCKER_HOST={self.url}"

    def cleanup_commands(self) -> list[str]:
        if self.dir is None:
            return []
        return [f"kill $(cat {self.dir}/dockerd.pid) 2>/dev/null", f"rm -rf {self.dir}"]
