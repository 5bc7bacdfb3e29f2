"""What the gossip simulator's tests share: the protocol's shipped settings, and counting a
simulation's directory changes."""

from __future__ import annotations

from collections import Counter

from fabric.directory import ChangeKind
from fabric.gossip.proto import GossipConfig
from fabric.gossip.sim import Simulation

CONFIG = GossipConfig()  # the defaults: every test here runs the protocol as shipped
TICK = CONFIG.tick_interval


def rounds(seconds: float) -> float:
    return seconds / TICK


def watch_changes(sim: Simulation) -> Counter[tuple[ChangeKind, str]]:
    """Count (kind, node id) of every directory change of every node from now on."""
    seen: Counter[tuple[ChangeKind, str]] = Counter()
    for node in sim.nodes.values():
        node.directory.subscribe(lambda change: seen.update([(change.kind, change.entry.node_id)]))
    return seen


def converged_sim(n: int, seed: int = 1, **kwargs) -> Simulation:
    sim = Simulation(CONFIG, seed=seed, **kwargs)
    sim.add_mesh("m1", n)
    assert sim.rounds_to_converge(max_rounds=100) is not None
    return sim
