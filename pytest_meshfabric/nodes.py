"""One node of a test cluster: a real ``meshfabric node`` process at a backend's placement.

A :class:`NodeHandle` outlives its process: ``kill()`` then ``restart()`` starts a new
process on the same data directory, so the node keeps its identity and name.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric import BOOT_STEPS, ConfigError, NodeProcess, control

from .backends import Placement
from .spanstore import CapturedSpan

if TYPE_CHECKING:
    from .cluster import Cluster

BOOT_ROOT = "mesh.node.ready"


class NodeHandle:
    """A node of a :class:`~pytest_meshfabric.cluster.Cluster`: start, stop, kill, restart, pause."""

    def __init__(self, cluster: Cluster, mesh: str, type: str, data_dir: Path, placement: Placement,
                 watch: tuple[str, ...] = (), args: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.mesh, self.type, self.data_dir = mesh, type, data_dir
        self.placement = placement
        self.watch = tuple(watch)
        self.args = tuple(args)
        self.process: NodeProcess | None = None
        self.info: dict[str, Any] = {}
        self.paused = False
        self.ready = False  # the current process printed its ready line
        self._launched_ns = 0
        if problem := control.socket_path_problem(self.control_path):  # the node would refuse it too
            raise ConfigError(f"the control socket path is longer than a Unix socket allows: {problem}; "
                              "point TMPDIR at a shorter directory")

    # -- who and where --

    @property
    def name(self) -> str:
        """``<mesh>.<type>.<hex6>`` once the node has been ready once, else ``<mesh>.<type>.?``."""
        return self.info.get("name", f"{self.mesh}.{self.type}.?")

    @property
    def node_id(self) -> str:
        return self.info["node_id"]

    @property
    def address(self) -> str:
        """``<id>@<ip:port>``, as other nodes take it for ``--bootstrap`` and clients to connect."""
        return self.info["address"]

    @property
    def control_path(self) -> Path:
        return control.socket_path(self.data_dir)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "node.log"

    @property
    def ip(self) -> str:
        return self.placement.ip

    @property
    def namespace(self) -> str | None:
        """The node's network namespace (netns backend), else ``None``."""
        return self.placement.namespace

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        """The process runs (it may be paused)."""
        return self.process is not None and self.process.alive()

    @property
    def running(self) -> bool:
        """Ready, alive and not paused: a node that takes part in gossip."""
        return self.ready and self.alive and not self.paused

    def __repr__(self) -> str:
        state = "paused" if self.paused and self.alive else "alive" if self.alive else "down"
        return f"<NodeHandle {self.name} pid={self.pid} {state} at {self.ip}>"

    # -- lifecycle --

    def launch(self) -> NodeHandle:
        """Start the process without waiting (the cluster starts many, then waits for all)."""
        if self.alive:
            raise ConfigError(f"{self.name} is already running (pid {self.pid}); stop() or kill() it first")
        bootstrap = self.cluster.bootstrap_for(self)
        args = [*self.cluster.spec.node_args, "--bind", self.placement.bind, *self.cluster.backbone_args(self),
                *self.args]
        process = self.placement.process_factory or NodeProcess
        self.process = process(self.mesh, self.type, self.data_dir, bootstrap, self.watch,
                                   env=self.cluster.node_env, prefix=self.placement.prefix, extra=args)
        self._launched_ns = time.time_ns()
        self.paused = self.ready = False
        self.process.start()
        return self

    def wait_ready(self, timeout: float = 15.0) -> NodeHandle:
        """Wait for the ready line (``NodeStartError`` with the log tail if it never comes)."""
        assert self.process is not None, "launch() first"
        previous = self.info.get("name")
        self.info = self.process.wait_ready(timeout)
        self.ready = True
        if previous and self.info["name"] != previous:
            raise ConfigError(f"{self.data_dir} came back as {self.info['name']}, not {previous}: "
                              "its identity key changed")
        return self

    def start(self, timeout: float = 15.0) -> NodeHandle:
        """Launch, wait for the ready line and for the boot trace to reach the receiver."""
        self.launch().wait_ready(timeout)
        self.cluster.store.wait_for(self.boot_trace, timeout, f"the boot trace of {self.name}")
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM: the node announces its leave and exits (SIGKILL after ``timeout``)."""
        self.paused = False
        return self.process.stop(timeout) if self.process else None

    def kill(self) -> None:
        """SIGKILL: no leave, no flush; peers find out by failure detection."""
        self.paused = False
        if self.process:
            self.process.kill()

    def restart(self, timeout: float = 15.0) -> NodeHandle:
        """Stop (cleanly, if it runs) and start again on the same data dir: same identity, same name.

        It joins through the cluster's live nodes; call ``cluster.wait_converged()`` to wait
        until every directory has it again.
        """
        if self.alive:
            self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the process freezes; peers see it turn suspect, then remove it."""
        if self.process:
            self.process.pause()
            self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.process:
            self.process.resume()
            self.paused = False

    # -- asking the node --

    def request(self, op: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
        """One request on the node's control socket (``ControlError`` if nobody answers)."""
        return control.request_sync(self.control_path, op, timeout, **args)

    def directory(self, mesh: str | None = None) -> list[dict[str, Any]]:
        """The node's directory entries (``name``, ``mesh``, ``type``, ``state``, ...)."""
        args = {"mesh": mesh} if mesh else {}
        return self.request("directory", **args)["entries"]

    def directory_names(self, alive_only: bool = True) -> set[str]:
        """Names in the node's directory (only entries in state ``alive`` unless told otherwise)."""
        return {e["name"] for e in self.directory() if not alive_only or e["state"] == "alive"}

    def status(self) -> dict[str, Any]:
        """Identity, address and counters (``meshfabric status``)."""
        return self.request("status")

    def boot_trace(self, spans: list[CapturedSpan]) -> list[CapturedSpan] | None:
        """The spans of this node's latest boot among ``spans``, once all steps are in."""
        roots = [s for s in spans if s.name == BOOT_ROOT and s.service_name == self.name
                 and s.start_ns >= self._launched_ns]
        if not roots or self.name.endswith("?"):
            return None
        trace = [s for s in spans if s.trace_id == roots[-1].trace_id]
        names = {s.name for s in trace}
        return trace if names >= {BOOT_ROOT, *BOOT_STEPS} else None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the node's log (its stderr), each prefixed ``  | ``."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "  | (no log yet)"
        return "\n".join(f"  | {line}" for line in text[-lines:]) or "  | (empty log)"

    def reach_hint(self) -> str:
        """How to talk to this node from a shell."""
        hints = [f"meshfabric status --data-dir {self.data_dir}"]
        if self.namespace:
            hints.append(f"ip netns exec {self.namespace} ...")
        return "; ".join(hints)

    def cleanup_commands(self) -> list[str]:
        return [f"kill -9 {self.pid} 2>/dev/null"] if self.alive and self.pid and self.pid != os.getpid() else []
