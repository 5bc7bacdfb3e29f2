"""The gossip protocol under faults, on the deterministic simulator (virtual time): killed,
paused and leaving nodes, packet loss, partitions and their heal, forged and malformed digests."""

from __future__ import annotations

import math
import random

import msgpack
import pytest

from fabric.directory import ChangeKind
from fabric.gossip import digest as digests
from fabric.gossip.digest import Digest
from fabric.gossip.proto import (
    Pull,
    Push,
    mesh_topic,
)
from fabric.gossip.sim import (
    FakeKeys,
    IrohKeys,
    NetConfig,
    NodeState,
    SimNode,
    Simulation,
)
from tests.fabric.gossip_sim_support import (
    CONFIG,
    TICK,
    converged_sim,
    rounds,
    watch_changes,
)

# -- (c): kill, pause, leave ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_killed_node_is_removed_from_every_live_directory(seed):
    sim = converged_sim(40, seed=seed)
    sim.run_rounds(3)
    victim = sim.meshes["m1"][20]
    changes = watch_changes(sim)
    sim.kill(victim)
    took = sim.rounds_to_remove(victim, max_rounds=100)
    assert took is not None
    # Not before remove_after (its last heartbeat is at most one interval old), and soon after.
    assert rounds(CONFIG.remove_after - CONFIG.heartbeat_interval) < took
    assert took <= rounds(CONFIG.remove_after + 1.5)
    assert changes[(ChangeKind.REMOVED, victim.node_id)] == 39
    assert sim.converged()


def test_a_paused_node_is_removed_then_comes_back_when_resumed():
    sim = converged_sim(40)
    sleeper = sim.meshes["m1"][10]
    sim.pause(sleeper)
    assert sim.rounds_to_remove(sleeper, max_rounds=50) is not None
    sim.run_for(2.0)
    sim.resume(sleeper)
    took = sim.rounds_to_converge(max_rounds=50)
    assert took is not None and took <= 10
    assert sleeper.known() == {n.node_id for n in sim.meshes["m1"]}
    assert all(sleeper.node_id in n.known() for n in sim.meshes["m1"])


def test_a_short_pause_does_not_remove_the_node():
    sim = converged_sim(40)
    sleeper = sim.meshes["m1"][10]
    changes = watch_changes(sim)
    sim.pause(sleeper)
    sim.run_for(CONFIG.suspect_after - 0.5)
    sim.resume(sleeper)
    sim.run_for(5.0)
    assert changes[(ChangeKind.REMOVED, sleeper.node_id)] == 0
    assert sim.converged()


def test_a_clean_leave_removes_the_node_at_once():
    sim = converged_sim(40)
    leaver = sim.meshes["m1"][7]
    changes = watch_changes(sim)
    sim.leave(leaver)
    assert leaver.state is NodeState.LEFT
    took = sim.rounds_to_remove(leaver, max_rounds=50)
    assert took is not None and took < rounds(CONFIG.suspect_after)  # before it could be suspect
    assert changes[(ChangeKind.LEFT, leaver.node_id)] == 39
    assert changes[(ChangeKind.REMOVED, leaver.node_id)] == 0
    sim.run_for(5.0)  # its last heartbeats still in flight do not bring it back
    assert sim.removed(leaver) and sim.converged()


# -- (e): loss -----------------------------------------------------------------------------


def test_ten_percent_loss_removes_no_live_node():
    sim = Simulation(CONFIG, seed=5, net=NetConfig(loss=0.10))
    sim.add_mesh("m1", 30)
    assert sim.rounds_to_converge(max_rounds=100) is not None
    changes = watch_changes(sim)
    sim.run_for(60.0)
    removed = {k: v for k, v in changes.items() if k[0] in (ChangeKind.REMOVED, ChangeKind.LEFT)}
    assert removed == {}
    assert sim.converged()
    sent = sum(n.sent_messages for n in sim.nodes.values())
    assert 0.08 < sim.dropped["lost"] / sent < 0.12  # the loss did happen


# -- (f): partitions -----------------------------------------------------------------------


@pytest.mark.parametrize("cut", [slice(0, 15), slice(1, 16)], ids=["seeds-on-one-side", "seeds-split"])
def test_a_partition_splits_the_mesh_and_healing_joins_it_again(cut):
    sim = converged_sim(30, seed=6)
    nodes = sim.meshes["m1"]
    side = nodes[cut]
    sim.partition(side)
    # Each side removes the other: converged now means "knows exactly its own side".
    assert sim.rounds_to_converge(max_rounds=60) is not None
    side_ids = {n.node_id for n in side}
    assert all(n.known() == side_ids for n in side)
    assert all(n.known() == {m.node_id for m in nodes} - side_ids for n in nodes if n not in side)

    sim.run_for(10.0)
    sim.heal()
    took = sim.rounds_to_converge(max_rounds=100)
    assert took is not None and took <= rounds(CONFIG.pull_interval) + 2 * math.log2(30)
    assert all(len(n.known()) == 30 for n in nodes)


def cut_off_until_alone(sim: Simulation) -> SimNode:
    """Isolate the mesh's last node (not a seed) until it has dropped everyone; return it."""
    loner = sim.meshes["m1"][-1]
    sim.partition([loner])
    assert sim.run_until(lambda: loner.known() == {loner.node_id}, 10.0) is not None
    return loner


def rejoin_time(seed: int, phase: int) -> float | None:
    """Seconds from the heal, ``phase`` ticks after the loner was alone, until it knows the mesh again."""
    sim = converged_sim(8, seed=seed)
    loner = cut_off_until_alone(sim)
    sim.run_for(phase * TICK)
    sim.heal()
    return sim.run_until(lambda: len(loner.known()) == 8, 5.0)


def test_a_node_cut_off_until_it_dropped_everyone_rejoins_about_a_heartbeat_after_the_heal():
    """A member with no live peer pulls its bootstrap peers every heartbeat, not every
    ``pull_interval``: nobody else pulls a node that is not a seed, so its own pull is what
    joins it up again. Healed at every phase of its pull schedule, it knows the mesh again
    within about a heartbeat (before: up to ``pull_interval``, 2 s)."""
    took = [rejoin_time(20 + phase, phase) for phase in range(round(CONFIG.pull_interval / TICK))]
    assert None not in took, took
    assert max(took) <= CONFIG.heartbeat_interval + 2 * TICK, took  # a tick to notice, two latencies


def test_a_node_alone_pulls_every_heartbeat_and_one_with_peers_every_pull_interval():
    sim = converged_sim(4, seed=9)
    loner, other = cut_off_until_alone(sim), sim.meshes["m1"][0]
    pulls = {n.node_id: 0 for n in (loner, other)}
    for node in (loner, other):
        sent = node.core.tick

        def counting(now, node=node, sent=sent):
            sends = sent(now)
            pulls[node.node_id] += sum(isinstance(s.message, Pull) for s in sends)
            return sends
        node.core.tick = counting
    sim.run_for(10.0)
    seeds = len(loner.core.bootstrap)  # a lone node pulls every bootstrap peer at once
    every = math.ceil(CONFIG.heartbeat_interval / TICK - 1e-9) * TICK  # the first tick a heartbeat on
    assert pulls[loner.node_id] == pytest.approx(10.0 / every * seeds, abs=seeds)
    assert pulls[other.node_id] <= 10.0 / CONFIG.pull_interval + 2  # plus a lost bootstrap peer's


# -- (g): forged digests -------------------------------------------------------------------


def bad_name_raw(node, heartbeat: int) -> bytes:
    """A digest correctly signed by ``node`` whose name is not the one its id derives."""
    d = node.core.directory.get(node.node_id).digest
    body = msgpack.packb([d.node_id, f"{d.mesh}.{d.type}.ffffff", d.mesh, d.type, list(d.addrs),
                          d.incarnation, heartbeat, False, {}], use_bin_type=True)
    return msgpack.packb([body, node.signer(body)], use_bin_type=True)


@pytest.mark.parametrize("keys", [FakeKeys(), IrohKeys()], ids=["fake-keys", "iroh-keys"])
def test_forged_and_malformed_digests_are_dropped_and_counted(keys):
    sim = Simulation(CONFIG, seed=7, keys=keys)
    nodes = sim.add_mesh("m1", 6)
    assert sim.rounds_to_converge(max_rounds=60) is not None
    victim, mallory = nodes[1], nodes[2]
    ghost_id, _ = FakeKeys().new(random.Random(1))  # an id nobody holds
    topic = mesh_topic("m1")
    now_v = victim.directory.get(victim.node_id).digest
    forged = digests.sign(Digest(victim.node_id, "m1", "broker", ("evil:1",), now_v.incarnation,
                                 now_v.heartbeat + 1000), mallory.signer)  # victim's id, mallory's key
    ghost = digests.sign(Digest(ghost_id, "m1", "broker", ("evil:2",), 1, 1), mallory.signer)
    targets = [n for n in nodes if n not in (victim, mallory)]
    for target in targets:
        sim.inject(mallory, target, Push(topic, (forged.raw, bad_name_raw(victim, now_v.heartbeat + 1000))))
        sim.inject(mallory, target, Pull(topic, (ghost.raw,)))
    sim.run_for(2.0)

    for target in targets:
        assert target.core.stats["forged"] == 2 and target.core.stats["malformed"] == 1
        entry = target.directory.get(victim.node_id)
        assert entry is not None and entry.addrs != ("evil:1",)
        assert entry.digest.heartbeat < now_v.heartbeat + 1000
    assert all(n.directory.get(ghost_id) is None for n in nodes)
    assert sim.converged()
