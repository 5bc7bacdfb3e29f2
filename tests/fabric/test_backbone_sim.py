"""The backbone on the deterministic simulator: scaling against subscribe-all, failures,
partitions. ``pytest -s`` prints the small scaling table (the full one is ``python -m bench.backbone``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest

from fabric.directory import ChangeKind
from fabric.gossip import crossmesh_sim
from fabric.gossip.backbone import BackboneConfig
from fabric.gossip.crossmesh_sim import CrossMeshWorld
from fabric.gossip.proto import GossipConfig
from fabric.gossip.sim import NetConfig

BB = BackboneConfig.like(GossipConfig())


@pytest.fixture(scope="module")
def scaling() -> dict[tuple[str, int], crossmesh_sim.CrossMeshResult]:
    runs = {(mode, m): crossmesh_sim.run(mode, m, nodes=10, gateways=2, window=6.0, trials=3, seed=m)
            for mode in ("watch", "backbone") for m in (2, 4, 8)}
    print("\nmode      M  msgs/gw/s  bytes/gw/s  join visible (mean, max s)")
    for (mode, m), r in runs.items():
        print(f"{mode:8} {m:2}  {r.msgs_per_gateway_s:9.1f}  {r.bytes_per_gateway_s:10.0f}  "
              f"{r.visible_s:.2f}, {r.visible_max_s:.2f}")
    return runs


def test_the_backbone_stays_flat_while_subscribe_all_grows_with_the_meshes(scaling):
    bb = {m: scaling[("backbone", m)] for m in (2, 4, 8)}
    watch = {m: scaling[("watch", m)] for m in (2, 4, 8)}
    # Backbone: a probe out, one in, and their replies per probe interval, whatever M.
    assert bb[8].bytes_per_gateway_s <= bb[2].bytes_per_gateway_s * 1.15, bb
    assert bb[8].msgs_per_gateway_s <= 4 / BB.probe_interval * 1.1
    # Subscribe-all: a pull and a full-state reply per remote mesh per heartbeat.
    for m, r in watch.items():
        assert r.msgs_per_gateway_s == pytest.approx(2 * (m - 1) / 0.6, rel=0.15)  # 0.5 s, on 0.2 s ticks
    assert watch[8].bytes_per_gateway_s >= 6 * watch[2].bytes_per_gateway_s
    assert bb[8].bytes_per_gateway_s < watch[8].bytes_per_gateway_s / 10


def test_a_join_is_seen_in_another_mesh_within_a_couple_of_seconds_either_way(scaling):
    for (mode, m), r in scaling.items():
        assert r.converge_s is not None, (mode, m)
        assert r.visible_max_s is not None and r.visible_max_s <= 2.5, (mode, m, r)


def converged_world(meshes: int = 4, nodes: int = 5, seed: int = 1, net: NetConfig | None = None,
                    backbone: BackboneConfig | None = None) -> CrossMeshWorld:
    world = CrossMeshWorld("backbone", meshes, nodes=nodes, gateways=2, seed=seed, net=net, backbone=backbone)
    assert world.converge(max_time=20.0) is not None
    return world


def removals(world: CrossMeshWorld) -> Counter[tuple[ChangeKind, str]]:
    seen: Counter[tuple[ChangeKind, str]] = Counter()
    for gw in world.gateways:
        gw.backbone.table.subscribe(lambda c: seen.update([(c.kind, c.member.node_id)]))
    return seen


def test_a_killed_gateway_is_dropped_and_its_mesh_keeps_its_seat():
    world = converged_world(seed=2)
    victim = world.gateways[2]  # mesh m1's first gateway
    mate = next(g for g in world.gateways if g.mesh == victim.mesh and g is not victim)
    changes = removals(world)
    world.sim.kill(victim)
    took = world.sim.run_until(lambda: all(g.backbone.table.get(victim.node_id) is None
                                           for g in world.gateways if g.up), max_time=20.0)
    # Probed within a round or two, then suspect_timeout to refute: ~ a few seconds.
    assert took is not None and took <= 2 * BB.probe_interval + BB.probe_timeout + BB.suspect_timeout + 2.0
    assert changes[(ChangeKind.REMOVED, victim.node_id)] == len(world.gateways) - 1
    # Before suspecting it, its probers asked others to probe it; nobody heard from it.
    survivors = [g for g in world.gateways if g.up]
    assert sum(g.backbone.stats["indirect_probes"] for g in survivors) >= 1
    assert sum(g.backbone.stats["indirect_acks"] for g in survivors) == 0
    # Its mesh-mate saw it go from the mesh's own heartbeats and republished the summary.
    assert world.converge(max_time=10.0) is not None
    observer = world.gateways[0]
    assert world.summary_hash(observer, victim.mesh) == world.truth(victim.mesh)
    assert max(mate.backbone.members(mesh=mate.mesh), key=lambda m: m.summary["sv"]).summary["n"]["gateway"] == 1


def test_a_clean_leave_is_seen_at_once():
    world = converged_world(seed=3)
    leaver = world.gateways[5]
    changes = removals(world)
    world.sim.leave(leaver)
    took = world.sim.run_until(lambda: all(g.backbone.table.get(leaver.node_id) is None
                                           for g in world.gateways if g.up), max_time=10.0)
    assert took is not None and took < BB.probe_timeout
    assert changes[(ChangeKind.LEFT, leaver.node_id)] == len(world.gateways) - 1


def test_a_short_pause_is_suspected_then_refuted_never_removed():
    world = converged_world(seed=4)
    sleeper = world.gateways[3]
    changes = removals(world)
    world.sim.pause(sleeper)
    world.sim.run_until(lambda: changes[(ChangeKind.SUSPECT, sleeper.node_id)] > 0, max_time=5.0)
    assert changes[(ChangeKind.SUSPECT, sleeper.node_id)] > 0
    world.sim.resume(sleeper)
    world.sim.run_for(BB.suspect_timeout + 3.0)
    assert changes[(ChangeKind.REMOVED, sleeper.node_id)] == 0
    assert sleeper.backbone.stats["refuted"] >= 1
    assert world.converged()


@pytest.mark.parametrize("seed", [5, 6])
def test_a_backbone_partition_splits_it_and_healing_joins_it_again(seed):
    world = converged_world(meshes=4, seed=seed)
    side = [n for mesh in ("m0", "m1") for n in world.sim.meshes[mesh]]
    side_ids = {n.node_id for n in side if n in world.gateways}
    world.sim.partition(side)
    cut = world.sim.run_until(lambda: all(
        {m.node_id for m in g.backbone.table} == (side_ids if g.node_id in side_ids
                                                  else {x.node_id for x in world.gateways} - side_ids)
        for g in world.gateways), max_time=20.0)
    assert cut is not None, "each side should drop the other side's gateways"
    world.sim.run_for(5.0)
    world.sim.heal()
    took = world.converge(max_time=30.0, step=BB.tick_interval)
    assert took is not None and took <= 3 * BB.rejoin_interval + math.log2(len(world.gateways)) + BB.suspect_timeout
    assert all(len(g.backbone.table) == len(world.gateways) for g in world.gateways)


def test_ten_percent_loss_removes_no_live_gateway():
    world = converged_world(meshes=4, seed=7, net=NetConfig(loss=0.10))
    changes = removals(world)
    world.sim.run_for(40.0)
    assert not [k for k, v in changes.items() if k[0] in (ChangeKind.REMOVED, ChangeKind.LEFT) and v]
    assert world.converged()


def fingerprint(seed: int) -> tuple:
    world = CrossMeshWorld("backbone", 3, nodes=4, gateways=2, seed=seed, net=NetConfig(loss=0.05))
    world.converge(max_time=20.0)
    world.sim.kill(world.gateways[1])
    world.sim.run_for(6.0)
    return tuple((g.name, g.backbone.version, sorted(g.backbone.stats.items()), g.backbone.table.state_hash())
                 for g in world.gateways)


def test_the_same_seed_replays_exactly():
    assert fingerprint(8) == fingerprint(8)
    assert fingerprint(8) != fingerprint(9)


def false_suspicions(seed: int, both_ways: bool, indirect_probes: int) -> tuple[Counter, CrossMeshWorld, tuple]:
    """Break the link between two gateways of different meshes (one way, or both) for 30 s,
    everything else intact; what the backbone made of the two of them."""
    world = converged_world(meshes=4, seed=seed, backbone=dataclasses.replace(BB, indirect_probes=indirect_probes))
    a, b = world.gateways[0], world.gateways[4]  # m0's first gateway, m2's first
    changes = removals(world)
    world.sim.cut(a, b, both_ways=both_ways)
    world.sim.run_for(30.0)
    about_them = Counter({k: v for k, v in changes.items() if k[1] in (a.node_id, b.node_id)})
    return about_them, world, (a, b)


@pytest.mark.parametrize("both_ways", [False, True])
@pytest.mark.parametrize("seed", [11, 12])
def test_a_broken_link_between_two_gateways_suspects_nobody_when_others_reach_both(seed, both_ways):
    changes, world, (a, b) = false_suspicions(seed, both_ways, indirect_probes=BB.indirect_probes)
    assert world.sim.dropped["partition"] > 0, "the link should really drop messages"
    assert not changes, f"false suspicions or removals: {changes}"
    # Each probe of b by a that was lost went through helpers, who heard b and said so.
    assert a.backbone.stats["indirect_probes"] >= 1 and a.backbone.stats["indirect_acks"] >= 1
    assert a.backbone.stats["probe_failed"] == 0
    if both_ways:
        assert b.backbone.stats["indirect_acks"] >= 1 and b.backbone.stats["probe_failed"] == 0
    assert sum(g.backbone.stats["relayed_probes"] for g in world.gateways) >= 2
    world.sim.heal()
    assert world.converge(max_time=10.0) is not None


def test_without_indirect_probes_the_same_broken_link_makes_false_suspicions():
    changes, _, (a, b) = false_suspicions(11, both_ways=False, indirect_probes=0)
    assert changes[(ChangeKind.SUSPECT, b.node_id)] >= 1  # a's lost probes accuse b, who refutes
    assert a.backbone.stats["probe_failed"] >= 1 and a.backbone.stats["indirect_probes"] == 0


def test_partition_and_heal_times_on_the_simulator():
    """The figure the real partition test compares against (test timings, 2 meshes of a
    broker and two gateways; gateways join through the first one)."""
    fast = GossipConfig(heartbeat_interval=0.3, suspect_after=1.0, remove_after=2.0)
    result = crossmesh_sim.partition_heal(meshes=2, nodes=3, gateways=2, config=fast, trials=5)
    bb = BackboneConfig.like(fast)
    assert result.trials == len(result.detect_s) == len(result.reconverge_s) == 5
    # Detected: a failed probe (direct, then indirect), suspect_timeout, a round or two of probing.
    assert result.detect_max_s <= 3 * bb.probe_interval + bb.probe_timeout + bb.suspect_timeout + 1.0, result
    # Healed: a rejoin probe (every rejoin_interval), then reconciliation and refutation rounds.
    assert result.reconverge_max_s <= 2 * bb.rejoin_interval + bb.suspect_timeout + 2.0, result
    print(f"\nsim partition/heal, test timings: detected {result.detect_mean_s:.2f} s (max {result.detect_max_s:.2f}),"
          f" re-converged {result.reconverge_mean_s:.2f} s (max {result.reconverge_max_s:.2f})")
