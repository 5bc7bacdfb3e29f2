"""Both cross-mesh designs on the simulator, side by side.

* ``watch``: the seed's interim design. A gateway follows every other mesh's gossip with a
  watcher core (it pulls one member's full state per mesh every heartbeat).
* ``backbone``: every gateway joins the backbone and publishes its mesh's summary; members'
  details are fetched on demand (not simulated: they cost nothing until someone resolves).

For each, ``run`` builds M meshes of ``nodes`` nodes (the last ``gateways`` of each are
gateways), lets them converge, then measures a window of steady state: the cross-mesh
messages and bytes (sent + received) per gateway per second. Then it joins a node to another
mesh, ``trials`` times, and times how long until an observing gateway knows: for ``watch``,
the node is in its directory; for ``backbone``, the mesh's newest summary hash covers it.

``partition_heal`` cuts the backbone in two (the first half of the meshes against the rest),
times until each side has removed the other side's gateways, heals, and times until every
gateway again holds every live gateway and every mesh's current summary.

In ``watch`` mode only ``watching`` gateways (spread over the meshes) actually watch: a
watcher only pulls, so what one gateway sends and receives does not depend on how many
others watch, and the simulation stays small enough to run at 256 meshes.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Literal

from .backbone import BACKBONE_TOPIC, BackboneConfig
from .proto import GossipConfig, mesh_topic
from .sim import NetConfig, SimNode, Simulation
from .summary import members_hash

Mode = Literal["watch", "backbone"]


@dataclass(frozen=True)
class CrossMeshResult:
    mode: str
    meshes: int
    nodes_per_mesh: int
    gateways_per_mesh: int
    converge_s: float | None  # virtual seconds until every gateway knew every mesh
    window_s: float
    msgs_per_gateway_s: float  # cross-mesh only, sent + received
    bytes_per_gateway_s: float
    visible_s: float | None  # mean virtual seconds for a join to reach another mesh's gateway
    visible_max_s: float | None
    wall_s: float

    def as_dict(self) -> dict:
        return asdict(self)


class CrossMeshWorld:
    """M meshes with gateways, wired for one ``mode``."""

    def __init__(self, mode: Mode, meshes: int, nodes: int = 10, gateways: int = 2, seed: int = 0,
                 watching: int = 4, config: GossipConfig | None = None, net: NetConfig | None = None,
                 backbone_seeds: int = 3, backbone: BackboneConfig | None = None) -> None:
        if mode not in ("watch", "backbone"):
            raise ValueError(f"mode must be 'watch' or 'backbone', not {mode!r}")
        self.mode = mode
        self.sim = Simulation(config or GossipConfig(), seed=seed, net=net)
        self.rng = random.Random(f"{seed}/crossmesh")
        self.names = [f"m{i}" for i in range(meshes)]
        self.gateways: list[SimNode] = []
        for name in self.names:
            self.gateways += self.sim.add_mesh(name, nodes, seeds=3, gateways=gateways)[nodes - gateways:]
        if mode == "watch":
            step = max(1, len(self.gateways) // watching)
            self.observers = self.gateways[::step][:watching]
            for gw in self.observers:
                for name in self.names:
                    if name != gw.mesh:
                        self.sim.watch(gw, name)
        else:
            seeds = self.gateways[:backbone_seeds]  # every gateway joins through these
            for gw in self.gateways:
                self.sim.join_backbone(gw, seeds, backbone)
            self.observers = self.gateways

    # -- what a gateway knows --------------------------------------------------

    def truth(self, mesh: str) -> bytes:
        """The summary hash of ``mesh``'s live members, as its gateways should publish it."""
        digests = [(e.digest if (e := n.directory.get(n.node_id)) else n.core.own_digest(0, False).digest)  # type: ignore[misc]
                   for n in self.sim.live(mesh)]
        return members_hash((d.node_id, d.type, d.addrs) for d in digests)

    def summary_hash(self, gateway: SimNode, mesh: str) -> bytes | None:
        """The newest summary hash of ``mesh`` in ``gateway``'s backbone view."""
        records = [m for m in gateway.backbone.members(mesh=mesh, type="gateway", alive_only=True)]  # type: ignore[union-attr]
        if not records:
            return None
        return max(records, key=lambda m: (m.summary.get("sv", 0), m.node_id)).summary.get("h")

    def knows(self, gateway: SimNode, node: SimNode) -> bool:
        """``gateway`` knows of ``node`` (in another mesh)."""
        if self.mode == "watch":
            return gateway.directory.get(node.node_id) is not None
        return self.summary_hash(gateway, node.mesh) == self.truth(node.mesh)

    def sees_everyone(self) -> bool:
        """Every live gateway holds every live gateway, none suspect, and every mesh's current
        summary (what a test on real processes can check from the outside)."""
        live = [g for g in self.gateways if g.up]
        ids = {g.node_id for g in live}
        return all({m.node_id for m in g.backbone.members(type="gateway", alive_only=True)} == ids  # type: ignore[union-attr]
                   and all(self.summary_hash(g, mesh) == self.truth(mesh) for mesh in self.names) for g in live)

    def converged(self) -> bool:
        if self.mode == "watch":
            return self.sim.converged()
        live = [g for g in self.gateways if g.up]
        hashes = {g.backbone.table.state_hash() for g in live}  # type: ignore[union-attr]
        if len(hashes) != 1 or len(live[0].backbone.table) != len(live):  # type: ignore[union-attr]
            return False
        return all(self.summary_hash(live[0], mesh) == self.truth(mesh) for mesh in self.names)

    # -- measuring -------------------------------------------------------------

    def converge(self, max_time: float, step: float = 0.5) -> float | None:
        start = self.sim.now
        while not self.converged():
            if self.sim.now - start >= max_time:
                return None
            self.sim.run_for(step)
        return self.sim.now - start

    def traffic(self) -> tuple[float, float]:
        """Cross-mesh (messages, bytes) per observing gateway per second since the last reset."""
        seconds = max(self.sim.now - self.sim._since, 1e-9)
        msgs = size = 0
        for gw in self.observers:
            topics = ([mesh_topic(m) for m in self.names if m != gw.mesh] if self.mode == "watch"
                      else [BACKBONE_TOPIC])
            for topic in topics:
                out_m, out_b, in_m, in_b = gw.traffic.get(topic, (0, 0, 0, 0))
                msgs, size = msgs + out_m + in_m, size + out_b + in_b
        n = len(self.observers)
        return msgs / n / seconds, size / n / seconds

    def time_to_see_a_join(self, max_time: float = 30.0) -> float | None:
        """Join a node to a random mesh; virtual seconds until an observer in another mesh knows."""
        observer = self.rng.choice(self.observers)
        mesh = self.rng.choice([m for m in self.names if m != observer.mesh])
        node = self.sim.add_node(mesh, node_type="compute")
        return self.sim.run_until(lambda: self.knows(observer, node), max_time)


def run(mode: Mode, meshes: int, nodes: int = 10, gateways: int = 2, window: float = 10.0,
        trials: int = 3, seed: int = 0, watching: int = 4, max_converge: float = 120.0) -> CrossMeshResult:
    """Build, converge, measure a steady-state window, then time ``trials`` joins."""
    started = time.perf_counter()
    was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived acyclic objects: the cyclic GC only costs time here
    try:
        world = CrossMeshWorld(mode, meshes, nodes, gateways, seed, watching)
        converge = world.converge(max_converge)
        world.sim.run_for(2.0)  # let the last rumors of the bootstrap die down
        world.sim.reset_counters()
        world.sim.run_for(window)
        msgs, size = world.traffic()
        seen = [world.time_to_see_a_join() for _ in range(trials)]
    finally:
        if was_enabled:
            gc.enable()
    done = [s for s in seen if s is not None]
    return CrossMeshResult(mode, meshes, nodes, gateways, converge, window, msgs, size,
                           sum(done) / len(done) if done and len(done) == len(seen) else None,
                           max(done) if done and len(done) == len(seen) else None,
                           time.perf_counter() - started)


@dataclass(frozen=True)
class PartitionHealResult:
    """Virtual seconds from the cut until each side removed the other side's gateways, and
    from the heal until ``sees_everyone`` holds again, over ``trials`` seeds."""

    meshes: int
    trials: int
    detect_s: tuple[float, ...]
    reconverge_s: tuple[float, ...]
    detect_mean_s: float
    detect_max_s: float
    reconverge_mean_s: float
    reconverge_max_s: float


def _split(world: CrossMeshWorld, side_ids: set[str]) -> bool:
    """Each gateway holds exactly the gateways on its side of the cut (``side_ids`` or the rest)."""
    everyone = {g.node_id for g in world.gateways}
    return all({m.node_id for m in g.backbone.table} == (side_ids if g.node_id in side_ids  # type: ignore[union-attr]
                                                         else everyone - side_ids) for g in world.gateways)


def partition_heal(meshes: int = 2, nodes: int = 3, gateways: int = 2, config: GossipConfig | None = None,
                   trials: int = 5, hold: float = 1.0, seed: int = 0, max_time: float = 60.0) -> PartitionHealResult:
    """Cut the backbone between the first half of the meshes and the rest (every link between
    them, as a real partition does), hold the cut ``hold`` s after it is detected, heal, and
    time both phases. Gateways join the backbone through the first gateway only, as the test
    harness's backbone clusters do, so after the heal only one side rejoins actively."""
    if trials < 1 or meshes < 2:
        raise ValueError(f"a partition needs 2+ meshes and 1+ trials, not meshes={meshes}, trials={trials}")
    detect: list[float] = []
    reconverge: list[float] = []
    for trial in range(trials):
        world = CrossMeshWorld("backbone", meshes, nodes, gateways, seed=seed + trial, config=config,
                               backbone_seeds=1)
        if world.converge(max_time) is None:
            raise RuntimeError(f"trial {trial}: the backbone never converged before the cut")
        side = [n for mesh in world.names[:max(1, meshes // 2)] for n in world.sim.meshes[mesh]]
        side_ids = {n.node_id for n in side if n in world.gateways}

        world.sim.partition(side)
        took = world.sim.run_until(partial(_split, world, side_ids), max_time)
        if took is None:
            raise RuntimeError(f"trial {trial}: the sides never dropped each other")
        detect.append(took)
        world.sim.run_for(hold)
        world.sim.heal()
        took = world.sim.run_until(world.sees_everyone, max_time)
        if took is None:
            raise RuntimeError(f"trial {trial}: the backbone did not converge again after the heal")
        reconverge.append(took)
    return PartitionHealResult(meshes, trials, tuple(detect), tuple(reconverge), sum(detect) / trials, max(detect),
                               sum(reconverge) / trials, max(reconverge))
