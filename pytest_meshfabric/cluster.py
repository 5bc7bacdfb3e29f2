"""A test cluster: meshes of real node processes, started, watched and torn down as one.

::

    cluster = Cluster(ClusterSpec(meshes=2), backend=backend, receiver=receiver, root=tmp)
    cluster.start()                      # ready: every boot trace in, every directory converged
    gw = cluster["mesh1"]["gateway"]     # a NodeHandle
    gw.kill(); cluster.wait_converged()  # the others drop it
    gw.restart(); cluster.wait_converged()
    cluster.stop()

Each mesh's *seed* (its first node whose type watches no other mesh, usually the broker)
starts first; every other node bootstraps through its mesh's seed, and gateways (and
consoles) also through the seeds of the meshes they watch. The runtime is driven only
through its processes and control sockets.

``ClusterSpec(cross_mesh="backbone")`` makes gateways and consoles watch no other mesh: they
see the others only through the backbone (``docs/backbone.md``). mesh1's first gateway (or
console) starts first and every later one joins the backbone through the running ones
(``--backbone-peer``); "converged" then also means every seat sees every running seat and
each mesh's newest summary counts the mesh's running nodes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from fabric import NODE_TYPES, ConfigError, FabricError, forkserver

from .backends import Backend
from .capture import OtlpReceiver
from .nodes import NodeHandle
from .spanstore import SpanStore
from .waiting import wait_until

__all__ = ["Cluster", "ClusterSpec", "Mesh", "NodeHandle"]

DEFAULT_TYPES = ("broker", "gateway", "registry", "compute")
WATCHING_TYPES = ("gateway", "console")
#: ``watch``: gateways and consoles also follow every other mesh's gossip (the default);
#: ``backbone``: they see other meshes only through the backbone.
CROSS_MESH_MODES = ("watch", "backbone")
#: Gossip timings that make joins, suspicion and removal take about a second.
FAST_GOSSIP = ("--heartbeat", "0.3", "--suspect-after", "1.0", "--remove-after", "2.0")


@dataclass(frozen=True)
class ClusterSpec:
    """What to start: ``meshes`` meshes named mesh1..meshN, each with one node per entry of
    ``types``; ``cross_mesh`` is one of ``CROSS_MESH_MODES``."""

    meshes: int = 1
    types: tuple[str, ...] = DEFAULT_TYPES
    node_args: tuple[str, ...] = FAST_GOSSIP
    cross_mesh: str = "watch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", tuple(self.types))
        object.__setattr__(self, "node_args", tuple(self.node_args))
        if self.cross_mesh not in CROSS_MESH_MODES:
            raise ConfigError(f"cross_mesh must be one of {', '.join(CROSS_MESH_MODES)}, not {self.cross_mesh!r}")
        if not isinstance(self.meshes, int) or self.meshes < 1:
            raise ConfigError(f"a cluster needs at least one mesh, not meshes={self.meshes!r}")
        if not self.types:
            raise ConfigError(f"a mesh needs at least one node type; choose from {', '.join(NODE_TYPES)}")
        unknown = [t for t in self.types if t not in NODE_TYPES]
        if unknown:
            raise ConfigError(f"unknown node type(s) {', '.join(map(repr, unknown))}; "
                              f"choose from {', '.join(NODE_TYPES)}")
        if self.meshes > 1 and all(t in WATCHING_TYPES for t in self.types):
            raise ConfigError(f"with several meshes each mesh needs a seed that watches no other mesh; add a type "
                              f"other than {' or '.join(WATCHING_TYPES)} (e.g. broker) to {list(self.types)}")

    @property
    def mesh_names(self) -> list[str]:
        return [f"mesh{i}" for i in range(1, self.meshes + 1)]

    @property
    def seed_type(self) -> str:
        return next((t for t in self.types if t not in WATCHING_TYPES), self.types[0])


class Mesh:
    """The nodes of one mesh; ``mesh["broker"]`` is its first broker."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[NodeHandle] = []

    def __getitem__(self, type: str) -> NodeHandle:
        found = self.of_type(type)
        if not found:
            raise KeyError(f"{self.name} has no {type!r} node; it has {', '.join(n.type for n in self.nodes)}")
        return found[0]

    def of_type(self, type: str) -> list[NodeHandle]:
        return [n for n in self.nodes if n.type == type]

    @property
    def seed(self) -> NodeHandle:
        return self.nodes[0]

    @property
    def names(self) -> set[str]:
        return {n.name for n in self.nodes}

    def __iter__(self) -> Iterator[NodeHandle]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"<Mesh {self.name}: {', '.join(n.name for n in self.nodes)}>"


def _earlier_processes(entries: Iterable[dict[str, Any]], incarnations: dict[str, int]) -> str:
    """``", an earlier process of [names]"`` for the entries held at another incarnation than
    the one running now (``incarnations``: name → incarnation), or ``""``."""
    stale = sorted(e["name"] for e in entries if incarnations.get(e["name"]) not in (None, e.get("incarnation")))
    return f", an earlier process of {stale}" if stale else ""


def _unheard_since(entries: Iterable[dict[str, Any]], names: set[str], since: float, asked_at: float) -> str:
    """``", not heard since the heal [names]"`` for the entries of ``names`` last heard before
    ``since``, or ``""``. A node's ``last_heard_s`` counts back from its own ``time.monotonic()``
    when it answered, which is at least ``asked_at``: every process here reads the one
    system-wide monotonic clock (the harness makes no time namespaces)."""
    unheard = sorted(e["name"] for e in entries if e["name"] in names and asked_at - e["last_heard_s"] < since)
    return f", not heard since the heal {unheard}" if unheard else ""


class Cluster:
    """Meshes of node processes on one backend, exporting spans to one receiver."""

    def __init__(self, spec: ClusterSpec, *, backend: Backend, receiver: OtlpReceiver, root: Path,
                 label: str = "c1", otlp_protocol: str = "http/protobuf", ready_timeout: float = 30.0) -> None:
        self.spec, self.backend, self.receiver = spec, backend, receiver
        self.root, self.label, self.ready_timeout = Path(root), label, ready_timeout
        self.node_env = receiver.env(otlp_protocol, bsp_schedule_delay_ms=100)
        self.meshes: dict[str, Mesh] = {}
        self.kept = False
        self._counter = 0

    @property
    def store(self) -> SpanStore:
        return self.receiver.store

    @property
    def nodes(self) -> list[NodeHandle]:
        return [n for mesh in self.meshes.values() for n in mesh]

    def __getitem__(self, mesh: str) -> Mesh:
        try:
            return self.meshes[mesh]
        except KeyError:
            raise KeyError(f"no mesh {mesh!r} in this cluster; it has {', '.join(self.meshes)}") from None

    def node(self, name: str) -> NodeHandle:
        """A node by full name, or by ``<mesh>.<type>`` (the first such node)."""
        for n in self.nodes:
            if n.name == name or f"{n.mesh}.{n.type}" == name:
                return n
        raise KeyError(f"no node {name!r}; the cluster has {', '.join(n.name for n in self.nodes)}")

    @property
    def entry(self) -> NodeHandle:
        """The node clients go through: mesh1's first gateway (it sees every mesh), else its seed."""
        first = next(iter(self.meshes.values()))
        return first.of_type("gateway")[0] if first.of_type("gateway") else first.seed

    def __repr__(self) -> str:
        return f"<Cluster {self.label} on {self.backend.name}: {len(self.nodes)} nodes in {', '.join(self.meshes)}>"

    # -- building --

    def add_node(self, mesh: str, type: str, *, watch: tuple[str, ...] | None = None,
                 args: tuple[str, ...] = (), start: bool = True) -> NodeHandle:
        """Add a node (a gateway or console watches every other mesh unless ``watch`` or a
        backbone-only spec says otherwise)."""
        if watch is None:
            watching = type in WATCHING_TYPES and self.spec.cross_mesh == "watch"
            watch = tuple(m for m in self.meshes if m != mesh) if watching else ()
        self._counter += 1
        label = f"{mesh}.{type}.{self._counter}"
        placement = self.backend.place(f"{self.label}/{label}")
        try:
            node = NodeHandle(self, mesh, type, self.root / label, placement, watch, args)
        except ConfigError:
            self.backend.release(placement)
            raise
        self.meshes.setdefault(mesh, Mesh(mesh)).nodes.append(node)
        if start:
            node.start(self.ready_timeout)
        return node

    def bootstrap_for(self, node: NodeHandle) -> list[str]:
        """Addresses ``node`` joins through: its mesh's running nodes, and one per watched mesh."""
        def running(mesh: str) -> list[NodeHandle]:
            return [n for n in self.nodes if n.mesh == mesh and n.running and n is not node]

        peers = [n.address for n in running(node.mesh)]
        for watched in node.watch:
            peers += [n.address for n in running(watched)[:1]]
        return peers

    def backbone_args(self, node: NodeHandle) -> list[str]:
        """``--backbone-peer`` arguments for a gateway or console of a backbone-only cluster:
        up to three running seats, of other meshes first."""
        if self.spec.cross_mesh != "backbone" or node.type not in WATCHING_TYPES:
            return []
        seats = sorted((n for n in self.nodes if n.type in WATCHING_TYPES and n.running and n is not node),
                       key=lambda n: n.mesh == node.mesh)
        return [arg for n in seats[:3] for arg in ("--backbone-peer", n.address)]

    def start(self) -> Cluster:
        """Start every mesh (seeds first, then the rest in parallel) and wait until ready."""
        names = self.spec.mesh_names
        for mesh in names:
            self.meshes[mesh] = Mesh(mesh)
        seed_type = self.spec.seed_type
        seeds = [self.add_node(m, seed_type, start=False) for m in names]
        self._prestart_fork_servers(seeds[0])
        for seed in seeds:
            seed.launch()
        rest = list(self.spec.types)
        rest.remove(seed_type)
        others = [self.add_node(m, t, start=False) for m in names for t in rest]  # placed while the seeds boot
        for seed in seeds:
            seed.wait_ready(self.ready_timeout)
        first_seat = next((n for n in others if n.type in WATCHING_TYPES), None)
        if self.spec.cross_mesh == "backbone" and first_seat is not None:
            others.remove(first_seat)  # the backbone's first member: the later ones join through it
            first_seat.launch().wait_ready(self.ready_timeout)
        for node in others:
            node.launch()
        for node in others:
            node.wait_ready(self.ready_timeout)
        self.wait_ready()
        return self

    def _prestart_fork_servers(self, node: NodeHandle) -> None:
        """Start the fork servers this cluster's nodes will be forked from side by side now, not
        one after the other as the first node of each kind needs its own (``fabric/forkserver.py``;
        none where nodes are not forked: the docker backend)."""
        placement = node.placement
        if placement.process_factory is None and forkserver.netns_of(placement.prefix)[0]:
            forkserver.prestart({**os.environ, **self.node_env}, self.spec.types)

    # -- waiting --

    def wait_ready(self, timeout: float | None = None) -> Cluster:
        """Wait until every running node's boot trace is captured and every directory converged."""
        self.wait_boot_traced(timeout)
        return self.wait_converged(timeout)

    def wait_boot_traced(self, timeout: float | None = None) -> Cluster:
        """Wait until the receiver holds the latest boot trace of every running node."""
        running = [n for n in self.nodes if n.running]

        def missing(spans: list) -> list[str]:
            return [n.name for n in running if not n.boot_trace(spans)]

        self.store.wait_for(lambda spans: not missing(spans), timeout or self.ready_timeout,
                            lambda: f"the boot traces of {', '.join(missing(self.store.all()))}")
        return self

    def expected_directory(self, node: NodeHandle) -> set[str]:
        """The names ``node`` should list: running nodes of its mesh and of the meshes it watches."""
        meshes = {node.mesh, *node.watch}
        return {n.name for n in self.nodes if n.mesh in meshes and n.running}

    def divergence(self, since: float | None = None) -> dict[str, str]:
        """Running nodes whose directory is not exactly the expected names, all alive and each
        of the process running now (and, with ``since``, each heard from after that
        ``time.monotonic()``): name → what differs.

        A restart keeps a node's name and id, so a directory still holding the previous
        process's entry (alive for up to ``--suspect-after``) would pass a check by name alone.
        Each node's own entry says which incarnation runs now. Likewise an entry last heard
        before a network fault was healed stays alive for up to ``--suspect-after`` whether or
        not its node can be heard again: ``since`` (the heal's time) tells the two apart.
        """
        report, directories, asked_at = {}, {}, {}
        for node in (n for n in self.nodes if n.running):
            try:
                asked_at[node.name] = time.monotonic()
                directories[node.name] = node.directory()
            except FabricError as exc:
                report[node.name] = f"no answer ({exc})"
        current = {name: e.get("incarnation") for name, entries in directories.items()
                   for e in entries if e["name"] == name}
        for node in (n for n in self.nodes if n.name in directories):
            expected = self.expected_directory(node)
            entries = directories[node.name]
            states = {e["name"]: e["state"] for e in entries}
            missing, extra = sorted(expected - set(states)), sorted(set(states) - expected)
            not_alive = sorted(f"{name} ({state})" for name, state in states.items()
                               if name in expected and state != "alive")
            stale = _earlier_processes((e for e in entries if e["name"] in expected), current)
            if since is not None:
                stale += _unheard_since(entries, expected - {node.name}, since, asked_at[node.name])
            if missing or extra or not_alive or stale:
                report[node.name] = f"missing {missing}, unexpected {extra}, not alive {not_alive}{stale}"
            elif self.spec.cross_mesh == "backbone" and node.type in WATCHING_TYPES:
                problem = self.backbone_divergence(node, current)
                if problem:
                    report[node.name] = problem
        return report

    def backbone_divergence(self, node: NodeHandle, incarnations: dict[str, int] | None = None) -> str:
        """What ``node``'s backbone view gets wrong ("" if nothing): the seats it lists (all
        alive, and of the processes in ``incarnations``, name → the incarnation running now)
        against the running ones, and each mesh's newest summary counts against the mesh's
        running nodes."""
        try:
            meshes = node.request("backbone")["meshes"]
        except FabricError as exc:
            return f"no backbone answer ({exc})"
        listed = [m for mesh in meshes for m in mesh["gateways"] + mesh["consoles"]]
        seats = {m["name"]: m["state"] for m in listed}
        expected = {n.name for n in self.nodes if n.type in WATCHING_TYPES and n.running}
        missing, extra = sorted(expected - set(seats)), sorted(set(seats) - expected)
        not_alive = sorted(f"{name} ({state})" for name, state in seats.items() if state != "alive")
        stale = _earlier_processes(listed, incarnations or {})
        if missing or extra or not_alive or stale:
            return f"backbone: missing {missing}, unexpected {extra}, not alive {not_alive}{stale}"
        counts = {mesh["mesh"]: (mesh["summary"] or {}).get("counts") for mesh in meshes
                  if any(g["name"] in expected for g in mesh["gateways"])}
        wrong = {mesh: got for mesh, got in counts.items() if got != self.type_counts(mesh)}
        return f"backbone: stale summaries {wrong}" if wrong else ""

    def type_counts(self, mesh: str) -> dict[str, int]:
        """``{type: count}`` of the running nodes of ``mesh`` (what its summary should say)."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            if n.mesh == mesh and n.running:
                counts[n.type] = counts.get(n.type, 0) + 1
        return counts

    def wait_converged(self, timeout: float | None = None, since: float | None = None) -> Cluster:
        """Wait until every running node's directory lists exactly the running nodes it should,
        all alive (and, with ``since``, each heard from after that ``time.monotonic()``: pass
        the time a fault was healed, see ``divergence``)."""
        wait_until(lambda: not self.divergence(since), timeout or self.ready_timeout, "every directory to converge",
                   describe=lambda _: "; ".join(f"{k}: {v}" for k, v in self.divergence(since).items()))
        return self

    def heal(self) -> Cluster:
        """Resume paused nodes, restart stopped or killed ones, and wait until ready again
        (every node heard from again by every directory that lists it)."""
        changed = False
        for node in self.nodes:
            if node.alive and node.paused:
                node.resume()
                changed = True
            elif not node.alive:
                node.start(self.ready_timeout)
                changed = True
        return self.wait_converged(since=time.monotonic()) if changed else self

    # -- teardown and reports --

    def remove_node(self, node: NodeHandle) -> None:
        """Stop ``node``, release its place and forget it."""
        node.stop()
        self.backend.release(node.placement)
        self.meshes[node.mesh].nodes.remove(node)

    def stop(self) -> None:
        """Stop every node (all at once: each announces its leave), release places, remove data."""
        if self.kept:
            return
        nodes = self.nodes
        for node in nodes:
            node.resume()
            if node.process:
                node.process.signal(signal.SIGTERM)  # all first: they leave in parallel

        def stop_and_release(node: NodeHandle) -> None:
            node.stop()
            self.backend.release(node.placement)  # netns: ~35 ms of `ip` a node, side by side here

        if nodes:
            with ThreadPoolExecutor(len(nodes), thread_name_prefix="meshfabric-stop") as pool:
                for done in [pool.submit(stop_and_release, node) for node in nodes]:
                    done.result()
        shutil.rmtree(self.root, ignore_errors=True)

    def keep(self) -> None:
        """Leave the cluster running at teardown (``--fabric-keep``)."""
        self.kept = True

    def log_tails(self, lines: int = 15) -> str:
        """Every node's log tail, headed by its name, pid and state."""
        return "\n".join(f"{n!r} log {n.log_path}:\n{n.log_tail(lines)}" for n in self.nodes)

    def describe(self) -> str:
        """How to reach every node of the cluster from a shell."""
        lines = [f"cluster {self.label} ({self.backend.describe()}), data in {self.root}:"]
        lines += [f"  {n.name:<24} pid {n.pid}  {n.address if n.info else '-'}\n"
                  f"      {n.reach_hint()}" for n in self.nodes]
        return "\n".join(lines)

    def cleanup_commands(self) -> list[str]:
        return [c for n in self.nodes for c in n.cleanup_commands()] + [f"rm -rf {self.root}"]
