"""Everything the plugin owns in one pytest process, and the guarantee that it all goes away.

A :class:`FabricSession` lazily opens the backend (a bridge, for netns), the OTLP receiver
and a temporary root for node data, starts clusters on them, and :meth:`FabricSession.close`
removes all of it: after the last test, from ``pytest_unconfigure`` if the fixture teardown
never ran (Ctrl-C during set-up), and at interpreter exit as a last resort. Clusters kept by
``--fabric-keep`` stay, with a cleanup script beside their data.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

from fabric.errors import FabricError

from .backends import Backend, open_backend, resolve_backend_name
from .capture import OtlpReceiver
from .cluster import Cluster, ClusterSpec
from .settings import FabricSettings
from .spanstore import SpanStore


class ClusterStartError(FabricError):
    """A cluster did not become ready; the message carries every node's log tail."""


def worker_id() -> str:
    """The pytest-xdist worker running this process (``gw0``, ...), or ``main``."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class FabricSession:
    """The backend, receiver, temp root and clusters of one pytest process."""

    def __init__(self, settings: FabricSettings, worker: str | None = None) -> None:
        self.settings = settings
        self.worker = worker or worker_id()
        self.notice: str | None = None
        self.clusters: list[Cluster] = []
        self.kept: list[Cluster] = []
        self._backend: Backend | None = None
        self._receiver: OtlpReceiver | None = None
        self._root: Path | None = None
        self._counter = 0
        self.closed = False
        atexit.register(self.close)

    # -- lazily opened resources --

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            name, self.notice = resolve_backend_name(self.settings.backend)
            self._backend = open_backend(name, self.worker)
        return self._backend

    @property
    def receiver(self) -> OtlpReceiver:
        if self._receiver is None:
            grpc = self.settings.otlp_protocol == "grpc"
            self._receiver = OtlpReceiver(grpc=grpc, forward_to=self.settings.otlp_forward, host=self.backend.host)
            self._receiver.start()
        return self._receiver

    @property
    def store(self) -> SpanStore:
        return self.receiver.store

    @property
    def root(self) -> Path:
        """A short temp dir for node data (Unix socket paths are limited to 107 bytes)."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix=f"mf-{self.worker}-{os.getpid()}-"))
        return self._root

    # -- clusters --

    def new_cluster(self, spec: ClusterSpec) -> Cluster:
        """A cluster on this session's backend and receiver, not started yet; close() stops it."""
        self._counter += 1
        label = f"c{self._counter}"
        cluster = Cluster(spec, backend=self.backend, receiver=self.receiver, root=self.root / label, label=label,
                          otlp_protocol=self.settings.otlp_protocol, ready_timeout=self.settings.ready_timeout)
        self.clusters.append(cluster)
        return cluster

    def start_cluster(self, spec: ClusterSpec) -> Cluster:
        """Start a cluster and wait until it is ready; a cluster that fails to start is stopped."""
        cluster = self.new_cluster(spec)
        try:
            return cluster.start()
        except FabricError as exc:
            logs = cluster.log_tails(self.settings.log_lines)
            self.stop_cluster(cluster)
            raise ClusterStartError(f"cluster {cluster.label} ({spec}) did not become ready: {exc}\n{logs}") from exc
        except BaseException:  # Ctrl-C while starting
            self.stop_cluster(cluster)
            raise

    def stop_cluster(self, cluster: Cluster) -> None:
        """Stop ``cluster`` unless it is kept."""
        if cluster in self.clusters:
            self.clusters.remove(cluster)
        if cluster.kept:
            if cluster not in self.kept:
                self.kept.append(cluster)
            return
        cluster.stop()

    # -- the end --

    def close(self) -> None:
        """Stop every cluster, the receiver and the backend; remove the temp root. Idempotent."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        for cluster in list(self.clusters):
            try:
                self.stop_cluster(cluster)
            except Exception:  # noqa: BLE001 - keep tearing the rest down
                pass
        if self._receiver is not None:
            self._receiver.stop()
        if self.kept:
            self._write_cleanup_script()
            if self._backend is not None:
                self._backend.keep()
        if self._backend is not None:
            self._backend.close()
        if self._root is not None and not self.kept:
            shutil.rmtree(self._root, ignore_errors=True)

    def cleanup_script(self) -> Path:
        return self.root / "cleanup.sh"

    def _write_cleanup_script(self) -> None:
        commands = [c for cluster in self.kept for c in cluster.cleanup_commands()]
        if self._backend is not None:
            commands += self._backend.cleanup_commands()
        commands.append(f"rm -rf {self.root}")
        self.cleanup_script().write_text("#!/bin/sh\n# removes the clusters kept by --fabric-keep\n"
                                         + "\n".join(commands) + "\n")
        self.cleanup_script().chmod(0o755)

    def keep_notice(self) -> str:
        """What was kept and how to reach and remove it."""
        parts = [c.describe() for c in self.kept]
        parts.append(f"remove everything with: sh {self.cleanup_script()}")
        return "\n".join(parts)


class ClusterPool:
    """The clusters shared by the tests of one fixture scope: one per spec, at most ``size`` running."""

    def __init__(self, session: FabricSession, size: int = 2) -> None:
        self.session = session
        self.size = size
        self._clusters: OrderedDict[ClusterSpec, Cluster] = OrderedDict()
        self._failed: dict[ClusterSpec, ClusterStartError] = {}

    def get(self, spec: ClusterSpec) -> Cluster:
        """The running cluster of ``spec`` (healed if a test broke it), started if needed."""
        cluster = self._clusters.pop(spec, None)
        if cluster is not None and not cluster.kept:
            self._clusters[spec] = cluster  # now the most recently used
            return cluster.heal()
        if cluster is not None:  # kept after a failure: it stays as it is, the next test gets a new one
            self.session.stop_cluster(cluster)
        if spec in self._failed:  # do not spend another start-up timeout on every test
            raise ClusterStartError(f"(an earlier test tried to start this cluster) {self._failed[spec]}")
        while len(self._clusters) >= self.size:
            _, oldest = self._clusters.popitem(last=False)
            self.session.stop_cluster(oldest)
        try:
            cluster = self.session.start_cluster(spec)
        except ClusterStartError as exc:
            self._failed[spec] = exc
            raise
        self._clusters[spec] = cluster
        return cluster

    def close(self) -> None:
        while self._clusters:
            _, cluster = self._clusters.popitem()
            self.session.stop_cluster(cluster)
