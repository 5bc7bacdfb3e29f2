"""A deterministic simulator: many gossip cores on one simulated network, on virtual time.

No sockets and no clock: every node is a ``GossipCore`` with its own ``Directory``, messages
travel through an event heap ordered by ``(virtual time, sequence number)``, and every random
choice comes from generators seeded by the simulation seed, so a seed replays exactly.

    sim = Simulation(GossipConfig(), seed=1)
    nodes = sim.add_mesh("mesh1", 100)          # node i of mesh1 is nodes[i]
    rounds = sim.rounds_to_converge()           # every live directory == live members
    sim.kill(nodes[5]); sim.rounds_to_remove(nodes[5])

Meshes are first-class: ``add_mesh`` as many as needed, and ``watch(node, mesh)`` gives a node
a watcher core that follows another mesh into the node's own directory (the seed's interim
cross-mesh design), while ``join_backbone(node)`` gives a gateway a backbone core that
publishes its mesh's summary (``backbone.py``, the design that replaces it). A *round* is one
``config.tick_interval``; every node ticks once per round at its own small phase offset.
Every node counts what it sends and receives per topic (``SimNode.traffic``).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from typing import Callable, Iterable

from ..directory import Directory
from .backbone import BackboneConfig, BackboneCore
from .digest import Digest, SignedDigest, sign
from .proto import GossipConfig, GossipCore, Message, Peer
from .simparts import FakeKeys, IrohKeys, Keys, NetConfig, NodeRef, NodeState, SimNode, Traffic, frame_size
from .summary import SummaryPublisher

__all__ = ["FakeKeys", "IrohKeys", "Keys", "NetConfig", "NodeRef", "NodeState", "SimNode", "Simulation", "Traffic",
           "frame_size"]


class Simulation:
    """Gossip cores of one or more meshes on a simulated network, driven by virtual time."""

    def __init__(self, config: GossipConfig | None = None, seed: int = 0,
                 net: NetConfig | None = None, keys: Keys | None = None,
                 node_type: str = "broker") -> None:
        self.config = config or GossipConfig()
        self.net = net or NetConfig()
        self.keys = keys or FakeKeys()
        self.node_type = node_type
        self.now = 0.0
        self.meshes: dict[str, list[SimNode]] = {}
        self.nodes: dict[str, SimNode] = {}
        self.dropped: Counter[str] = Counter()  # why messages did not arrive
        self._rng = random.Random(f"{seed}/nodes")    # ids, phases, per-core rngs
        self._net_rng = random.Random(f"{seed}/net")  # latency and loss
        self._seeds: dict[str, list[SimNode]] = {}
        self._queue: list[tuple] = []
        self._seq = itertools.count()
        self._group: dict[str, int] = {}
        self._cut: set[tuple[str, str]] = set()  # (src, dst): links that drop every message
        self._since = 0.0

    # -- building ------------------------------------------------------------------------

    def add_mesh(self, name: str, n: int, seeds: int = 3, gateways: int = 0) -> list[SimNode]:
        """Add mesh ``name`` with ``n`` nodes, the last ``gateways`` of them of type gateway;
        each bootstraps off the first ``seeds`` nodes."""
        if name in self.meshes:
            raise ValueError(f"mesh {name!r} exists already")
        self.meshes[name] = []
        nodes = [self._new_node(name, "gateway" if i >= n - gateways else None) for i in range(n)]
        self._seeds[name] = nodes[:seeds]
        for node in nodes:
            node.core.bootstrap = self._peers(self._seeds[name], node)
        return nodes

    def add_node(self, mesh: str, bootstrap: Iterable[NodeRef] | None = None,
                 node_type: str | None = None) -> SimNode:
        """Join a new node to ``mesh`` through ``bootstrap`` (default: the mesh's seeds)."""
        node = self._new_node(mesh, node_type)
        chosen = self._seeds[mesh] if bootstrap is None else [self._node(b) for b in bootstrap]
        node.core.bootstrap = self._peers(chosen, node)
        return node

    def watch(self, node: NodeRef, mesh: str, bootstrap: Iterable[NodeRef] | None = None) -> GossipCore:
        """Give ``node`` a watcher core following ``mesh`` into the node's own directory."""
        node = self._node(node)
        chosen = self._seeds[mesh] if bootstrap is None else [self._node(b) for b in bootstrap]
        core = GossipCore(mesh, node.node_id, node.directory, self.keys.verify, self.config,
                          None, random.Random(self._rng.getrandbits(64)), self._peers(chosen, node))
        node.watchers[mesh] = core
        return core

    def join_backbone(self, node: NodeRef, bootstrap: Iterable[NodeRef] = (),
                      config: BackboneConfig | None = None) -> BackboneCore:
        """Give ``node`` (a gateway) a backbone core that publishes its mesh's summary."""
        node = self._node(node)
        addrs, incarnation = (f"sim://{node.node_id[:12]}",), int(self.now * 1000) + 1
        publisher: list[SummaryPublisher] = []

        def own_record(version: int, leaving: bool) -> SignedDigest:
            meta = publisher[0].meta() if publisher else {}
            return sign(Digest(node.node_id, node.mesh, "gateway", addrs, incarnation, version, leaving, meta),
                        node.signer)

        core = BackboneCore(node.node_id, own_record, node.signer, self.keys.verify,
                            config or BackboneConfig.like(self.config), random.Random(self._rng.getrandbits(64)),
                            self._peers([self._node(b) for b in bootstrap], node))
        publisher.append(SummaryPublisher(node.directory, node.mesh, core.changed, lambda: (
            m.summary.get("sv", 0) for m in core.members(mesh=node.mesh, type="gateway"))))
        node.backbone = core
        return core

    # -- faults --------------------------------------------------------------------------

    def kill(self, node: NodeRef) -> None:
        """Stop ``node`` for good: it neither ticks nor receives."""
        self._node(node).state = NodeState.DEAD

    def pause(self, node: NodeRef) -> None:
        self._node(node).state = NodeState.PAUSED

    def resume(self, node: NodeRef) -> None:
        node = self._node(node)
        if node.state is NodeState.PAUSED:
            node.state = NodeState.UP

    def leave(self, node: NodeRef) -> None:
        """Clean leave: the node announces it (``core.leave``), then stops."""
        node = self._node(node)
        for send in [s for core in node.cores() for s in core.leave(self.now)]:
            self._send(node, send.to.node_id, send.message)
        node.state = NodeState.LEFT

    def inject(self, src: NodeRef, dst: NodeRef, message: Message) -> None:
        """Send ``message`` as if ``src`` had (a crafted or forged one, say); it is counted,
        can be lost and arrives after the latency like any other."""
        self._send(self._node(src), self._node(dst).node_id, message)

    def partition(self, *groups: Iterable[NodeRef]) -> None:
        """Cut the network: nodes in different groups (unlisted nodes form one more group)
        cannot reach each other. Messages in flight across the cut are dropped."""
        self._group = {self._node(n).node_id: i for i, group in enumerate(groups) for n in group}

    def cut(self, src: NodeRef, dst: NodeRef, both_ways: bool = False) -> None:
        """Drop every message from ``src`` to ``dst`` (and back, with ``both_ways``); the rest
        of the network is untouched: a one-way or asymmetric link failure."""
        a, b = self._node(src).node_id, self._node(dst).node_id
        self._cut |= {(a, b), (b, a)} if both_ways else {(a, b)}

    def heal(self) -> None:
        """End every partition and cut link."""
        self._group = {}
        self._cut = set()

    # -- running -------------------------------------------------------------------------

    def run_for(self, duration: float) -> None:
        """Process every event up to ``now + duration``."""
        until = self.now + duration
        while self._queue and self._queue[0][0] <= until:
            when, _, is_tick, args = heapq.heappop(self._queue)
            self.now = when
            if is_tick:
                self._tick(*args)
            else:
                self._deliver(*args)
        self.now = until

    def run_rounds(self, rounds: int) -> None:
        self.run_for(rounds * self.config.tick_interval)

    def run_until(self, predicate: Callable[[], bool], max_time: float) -> float | None:
        """Run in steps of one round until ``predicate()``; return the virtual time it took,
        or ``None`` if it still does not hold after ``max_time`` seconds."""
        start, step = self.now, self.config.tick_interval
        while not predicate():
            if self.now - start >= max_time - 1e-9:
                return None
            self.run_for(step)
        return self.now - start

    def rounds_until(self, predicate: Callable[[], bool], max_rounds: int = 500) -> int | None:
        """``run_until`` counted in rounds."""
        took = self.run_until(predicate, max_rounds * self.config.tick_interval)
        return None if took is None else round(took / self.config.tick_interval)

    # -- measuring -----------------------------------------------------------------------

    def live(self, mesh: str | None = None) -> list[SimNode]:
        """Nodes that are up, of one mesh or of all."""
        nodes = self.meshes[mesh] if mesh else self.nodes.values()
        return [n for n in nodes if n.up]

    def converged(self) -> bool:
        """Every live node's directory holds exactly the live members it can reach (all, when
        there is no partition) of its own mesh and of every mesh it watches."""
        members: dict[tuple[str, int | None], set[str]] = {}
        for node in self.live():
            members.setdefault((node.mesh, self._group.get(node.node_id)), set()).add(node.node_id)
        return all(node.known(m) == members.get((m, self._group.get(node.node_id)), set())
                   for node in self.live() for m in (node.mesh, *node.watchers))

    def spread(self, node: NodeRef, version: tuple[int, int] | None = None) -> bool:
        """Every live node that follows ``node``'s mesh holds it (at ``version`` or newer)."""
        target = self._node(node)
        for other in self._followers(target.mesh):
            entry = other.directory.get(target.node_id)
            if entry is None or (version is not None and entry.digest.version < version):
                return False
        return True

    def removed(self, node: NodeRef) -> bool:
        """No live node's directory holds ``node`` any more."""
        node_id = self._node(node).node_id
        return all(other.directory.get(node_id) is None for other in self.live())

    def rounds_to_converge(self, max_rounds: int = 500) -> int | None:
        return self.rounds_until(self.converged, max_rounds)

    def rounds_to_spread(self, node: NodeRef, version: tuple[int, int] | None = None,
                         max_rounds: int = 500) -> int | None:
        """Rounds until ``node`` (a join, or its digest at ``version``) reaches every follower."""
        return self.rounds_until(lambda: self.spread(node, version), max_rounds)

    def rounds_to_remove(self, node: NodeRef, max_rounds: int = 500) -> int | None:
        """Rounds until ``node`` (killed, paused or gone) is in no live directory."""
        return self.rounds_until(lambda: self.removed(node), max_rounds)

    def reset_counters(self) -> None:
        """Start a new measuring window for ``traffic``."""
        self._since = self.now
        for node in self.nodes.values():
            node.sent_messages = node.sent_bytes = node.max_sends_per_tick = 0
            node.traffic.clear()

    def traffic(self, mesh: str | None = None) -> Traffic:
        """What the live nodes (of ``mesh``) sent since the last ``reset_counters``."""
        nodes = self.live(mesh)
        return Traffic(len(nodes), (self.now - self._since) / self.config.tick_interval,
                       sum(n.sent_messages for n in nodes), sum(n.sent_bytes for n in nodes))

    def stats(self, mesh: str | None = None) -> Counter[str]:
        """The member cores' ``stats`` of every node (of ``mesh``), summed."""
        total: Counter[str] = Counter()
        for node in (self.meshes[mesh] if mesh else self.nodes.values()):
            total.update(node.core.stats)
        return total

    # -- internals -----------------------------------------------------------------------

    def _new_node(self, mesh: str, node_type: str | None = None) -> SimNode:
        node_id, signer = self.keys.new(self._rng)
        node_type = node_type or self.node_type
        incarnation = int(self.now * 1000) + 1
        addrs = (f"sim://{node_id[:12]}",)

        def own_digest(heartbeat: int, leaving: bool) -> SignedDigest:
            digest = Digest(node_id, mesh, node_type, addrs, incarnation, heartbeat, leaving)
            return sign(digest, signer)

        directory = Directory(node_id, self.config.suspect_after, self.config.remove_after)
        core = GossipCore(mesh, node_id, directory, self.keys.verify, self.config, own_digest,
                          random.Random(self._rng.getrandbits(64)))
        phase = self._rng.uniform(0.0, self.config.tick_interval)
        node = SimNode(len(self.meshes[mesh]), mesh, node_id, own_digest(0, False).digest.name,
                       signer, directory, core, phase)
        self.meshes[mesh].append(node)
        self.nodes[node_id] = node
        self._schedule(self.now + phase, True, node)
        return node

    def _tick(self, node: SimNode) -> None:
        if node.state in (NodeState.DEAD, NodeState.LEFT):
            return
        self._schedule(self.now + self.config.tick_interval, True, node)
        if not node.up:
            return
        sends = [send for core in node.cores() for send in core.tick(self.now)]
        node.max_sends_per_tick = max(node.max_sends_per_tick, len(sends))
        sizes: dict[int, int] = {}  # one Push goes to `fanout` peers: size it once
        for send in sends:
            key = id(send.message)
            if key not in sizes:
                sizes[key] = frame_size(send.message)
            self._send(node, send.to.node_id, send.message, sizes[key])

    def _send(self, src: SimNode, dst: str, message: Message, size: int | None = None) -> None:
        size = frame_size(message) if size is None else size
        src.sent_messages += 1
        src.sent_bytes += size
        src.count(message.topic, size, out=True)
        if self.net.loss and self._net_rng.random() < self.net.loss:
            self.dropped["lost"] += 1
            return
        latency = self.net.latency
        delay = self._net_rng.uniform(*latency) if isinstance(latency, tuple) else latency
        self._schedule(self.now + delay, False, src.node_id, dst, message, size)

    def _deliver(self, src: str, dst: str, message: Message, size: int) -> None:
        node = self.nodes.get(dst)
        if node is None or not node.up:
            self.dropped["down"] += 1
            return
        if self._group.get(src) != self._group.get(dst) or (src, dst) in self._cut:
            self.dropped["partition"] += 1
            return
        node.count(message.topic, size, out=False)
        core = next((c for c in node.cores() if c.topic == message.topic), node.core)
        reply = core.handle(src, message, self.now)  # type: ignore[arg-type]
        if reply is not None:
            self._send(node, src, reply)
        for send in core.take_urgent() if isinstance(core, BackboneCore) else ():
            self._send(node, send.to.node_id, send.message)

    def _schedule(self, when: float, is_tick: bool, *args: object) -> None:
        # Events hold no bound methods (nor closures over self): a finished simulation is
        # freed at once, without waiting for the cyclic garbage collector.
        heapq.heappush(self._queue, (when, next(self._seq), is_tick, args))

    def _followers(self, mesh: str) -> list[SimNode]:
        return [n for n in self.live() if n.mesh == mesh or mesh in n.watchers]

    def _node(self, ref: NodeRef) -> SimNode:
        return ref if isinstance(ref, SimNode) else self.nodes[ref]

    @staticmethod
    def _peers(nodes: Iterable[SimNode], exclude: SimNode) -> list[Peer]:
        return [Peer(n.node_id) for n in nodes if n is not exclude]
