"""The gossip protocol at scale and under faults, on the deterministic simulator (virtual time).

``pytest -s`` prints the scaling table: rounds to converge from bootstrap, rounds for a join to
reach every node, and messages and bytes per node per round.
"""

from __future__ import annotations

import gc
import hashlib
import math
import random
from collections import Counter

import msgpack
import pytest

from fabric.directory import ChangeKind, Directory
from fabric.gossip import digest as digests
from fabric.gossip.digest import Digest
from fabric.gossip.proto import GossipConfig, GossipCore, Pull, PullReply, Push, mesh_topic
from fabric.gossip.sim import FakeKeys, IrohKeys, NetConfig, NodeState, SimNode, Simulation

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


# -- (a) and (b): scale --------------------------------------------------------------------

SIZES = (50, 100, 500)


@pytest.fixture(scope="module")
def scale_runs() -> dict[int, dict]:
    """For each N: a mesh bootstraps off 3 seeds, then one more node joins; traffic is
    counted from that join on."""
    # The simulation allocates millions of short-lived, acyclic objects; the cyclic GC's full
    # passes over them cost ~30% of the run and find nothing to collect.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        runs = {}
        for n in SIZES:
            sim = Simulation(CONFIG, seed=n)
            nodes = sim.add_mesh("m1", n, seeds=3)
            converge = sim.rounds_to_converge(max_rounds=100)
            sim.reset_counters()
            joiner = sim.add_node("m1")
            spread = sim.rounds_to_spread(joiner, max_rounds=100)
            sim.run_rounds(max(0, 10 - (spread or 0)))  # count traffic over 10+ rounds
            runs[n] = dict(converge=converge, spread=spread, traffic=sim.traffic(),
                           max_sends=max(node.max_sends_per_tick for node in nodes),
                           joiner_max_sends=joiner.max_sends_per_tick, converged=sim.converged())
    finally:
        if was_enabled:
            gc.enable()
    print("\n    N  converge  join-spread  (c*log2 N, c=2)  msgs/node/round  bytes/node/round")
    for n, run in runs.items():
        t = run["traffic"]
        print(f"{n:5d}  {run['converge']:8}  {run['spread']:11}  {2 * math.log2(n):15.1f}  "
              f"{t.msgs_per_node_per_round:15.2f}  {t.bytes_per_node_per_round:16.0f}")
    return runs


@pytest.mark.parametrize("n", SIZES)
def test_a_mesh_converges_from_bootstrap_and_a_join_spreads_in_log_rounds(scale_runs, n):
    run = scale_runs[n]
    bound = 2 * math.log2(n)
    assert run["converge"] is not None and run["converge"] <= bound, run
    assert run["spread"] is not None and run["spread"] <= bound, run
    assert run["converged"]  # the join reached everyone and nobody was lost meanwhile


def test_messages_per_node_per_tick_are_bounded_by_fanout_and_pull(scale_runs):
    # Per tick a member sends one push to `fanout` peers and, when due, one pull.
    for run in scale_runs.values():
        assert run["max_sends"] <= CONFIG.fanout + 1
        # A joiner also pulls a bootstrap peer it does not know as a member yet.
        assert run["joiner_max_sends"] <= CONFIG.fanout + 2
    # On average: pushes every tick, plus one pull and one pull reply per pull_interval.
    ceiling = CONFIG.fanout + 2 * TICK / CONFIG.pull_interval
    per_round = {n: run["traffic"].msgs_per_node_per_round for n, run in scale_runs.items()}
    assert all(rate <= ceiling * 1.05 for rate in per_round.values()), per_round
    assert per_round[500] <= per_round[50] * 1.1, per_round  # does not grow with N


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


# -- (d): meshes and watchers --------------------------------------------------------------


def test_two_meshes_stay_apart_and_a_watcher_sees_both():
    sim = Simulation(CONFIG, seed=4)
    m1, m2 = sim.add_mesh("m1", 20), sim.add_mesh("m2", 20)
    watcher_node = m1[5]
    watcher = sim.watch(watcher_node, "m2")
    assert sim.rounds_to_converge(max_rounds=60) is not None
    ids = {mesh: {n.node_id for n in nodes} for mesh, nodes in (("m1", m1), ("m2", m2))}

    for node in m1 + m2:
        meshes = {e.mesh for e in node.directory}
        if node is watcher_node:
            assert meshes == {"m1", "m2"} and len(node.directory) == 40
            assert node.known("m1") == ids["m1"] and node.known("m2") == ids["m2"]
        else:
            assert meshes == {node.mesh} and node.known() == ids[node.mesh]
    assert all(watcher_node.node_id not in n.known("m1") | n.known("m2") for n in m2)

    # The watcher only pulls, at the first tick a heartbeat interval after the last pull.
    before = watcher.stats["sent_messages"]
    sim.run_for(6.0)
    period = math.ceil(CONFIG.heartbeat_interval / TICK) * TICK
    assert watcher.stats["sent_messages"] - before == pytest.approx(6.0 / period, abs=1)
    assert not watcher._rumors  # regression: it hoarded every digest it learned, never pushed
    assert sim.stats("m2")["wrong_mesh"] == 0

    # Failure detection covers the watched mesh too.
    sim.kill(m2[3])
    assert sim.rounds_to_remove(m2[3], max_rounds=40) is not None
    assert watcher_node.known("m2") == ids["m2"] - {m2[3].node_id}


#: The test harness's timings (``--heartbeat 0.3 --suspect-after 1.0 --remove-after 2.0``):
#: a watcher pulls every other tick, so only two pulls fall in a suspicion window.
HARNESS = GossipConfig(heartbeat_interval=0.3, suspect_after=1.0, remove_after=2.0)


def watched_pair(seed: int) -> tuple[Simulation, list, list]:
    """Two 4-node meshes bootstrapping off their first node; m1[1] watches m2 (a gateway)."""
    sim = Simulation(HARNESS, seed=seed)
    m1, m2 = sim.add_mesh("m1", 4, seeds=1), sim.add_mesh("m2", 4, seeds=1)
    sim.watch(m1[1], "m2")
    assert sim.rounds_to_converge(max_rounds=60) is not None
    return sim, m1, m2


def test_a_watcher_keeps_the_live_nodes_of_a_mesh_whose_seed_was_killed():
    """Regression: a killed node stays alive in a watcher's directory until suspected; pulls
    drawn to it twice in a row starved the watcher, which dropped the whole mesh (~1 kill in 16)."""
    lost = []
    for seed in range(80):
        sim, m1, m2 = watched_pair(seed)
        sim.kill(m2[0])
        assert sim.rounds_to_remove(m2[0], max_rounds=40) is not None
        sim.run_for(2.0)
        if m1[1].known("m2") != {n.node_id for n in m2[1:]}:
            lost.append(seed)
    assert lost == []


def test_a_watcher_that_lost_a_mesh_rejoins_it_without_its_dead_seed():
    """A watcher away for longer than ``remove_after`` comes back to an empty view of the mesh
    and its only bootstrap peer dead: it rejoins through a member it knew."""
    sim, m1, m2 = watched_pair(7)
    sim.pause(m1[1])
    sim.kill(m2[0])
    sim.run_for(HARNESS.remove_after + 1.0)
    changes = watch_changes(sim)
    sim.resume(m1[1])
    assert sim.run_until(lambda: m1[1].known("m2") == {n.node_id for n in m2[1:]}, max_time=3.0) is not None
    assert all(changes[(ChangeKind.REMOVED, n.node_id)] == 1 for n in m2[1:])  # it had lost them


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


# -- (h): determinism ----------------------------------------------------------------------


def fingerprint(seed: int) -> tuple:
    sim = Simulation(CONFIG, seed=seed, net=NetConfig(latency=(0.005, 0.08), loss=0.05))
    nodes = sim.add_mesh("m1", 30)
    sim.add_mesh("m2", 10)
    sim.watch(nodes[0], "m2")
    converge = sim.rounds_to_converge(max_rounds=100)
    sim.kill(nodes[4])
    sim.partition(nodes[10:20])
    sim.run_for(4.0)
    sim.heal()
    sim.run_for(4.0)
    return (converge, sorted(sim.dropped.items()), sorted(sim.stats().items()),
            [(n.name, n.sent_messages, n.sent_bytes) for n in sim.nodes.values()])


def test_the_same_seed_replays_exactly():
    first = fingerprint(11)
    assert fingerprint(11) == first
    assert fingerprint(12) != first


# -- the simulator itself --------------------------------------------------------------------


def test_a_pull_reply_arrives_after_two_latencies():
    sim = Simulation(CONFIG, seed=8, net=NetConfig(latency=1.0))
    seed_node = sim.add_mesh("m1", 1)[0]
    sim.run_for(5.0)
    joiner = sim.add_node("m1")
    sim.run_for(joiner.phase + 2.0 - 0.01)  # its first pull went out at `phase`
    assert joiner.known() == {joiner.node_id}
    sim.run_for(0.02)
    assert joiner.known() == {joiner.node_id, seed_node.node_id}


def member_core(keys: FakeKeys, rng: random.Random) -> GossipCore:
    """A bare member core of mesh m1 with its own directory, outside any simulation."""
    node_id, signer = keys.new(rng)

    def own(heartbeat: int, leaving: bool) -> digests.SignedDigest:
        return digests.sign(Digest(node_id, "m1", "broker", (), 1, heartbeat, leaving), signer)

    return GossipCore("m1", node_id, Directory(node_id), keys.verify, CONFIG, own, rng)


def test_a_full_state_bigger_than_a_message_is_sampled_not_truncated():
    # A receiver ingests only max_digests_per_message digests of a message. A pull reply of
    # a bigger mesh used to be the full state sorted by name, so the same tail was cut off
    # every time and anti-entropy could never repair those members.
    keys, rng = FakeKeys(), random.Random(9)
    core, receiver = member_core(keys, rng), member_core(keys, rng)
    for _ in range(300):
        node_id, signer = keys.new(rng)
        core.directory.apply(digests.sign(Digest(node_id, "m1", "broker", (), 1, 1), signer), now=0.0)
    covered: set[bytes] = set()
    for _ in range(8):
        reply = core.handle(receiver.self_id, Pull(core.topic, ()), now=0.0)
        assert isinstance(reply, PullReply) and len(reply.digests) == CONFIG.max_digests_per_message
        covered.update(reply.digests)
    assert len(covered) == 300
    receiver.handle(core.self_id, reply, now=0.0)
    assert receiver.stats["truncated"] == 0 and len(receiver.directory) == 256


def test_fake_keys_reject_a_signature_for_another_id():
    keys, rng = FakeKeys(), random.Random(0)
    (a, sign_a), (b, _) = keys.new(rng), keys.new(rng)
    assert keys.verify(a, b"body", sign_a(b"body"))
    assert not keys.verify(b, b"body", sign_a(b"body"))
    assert sign_a(b"body") == hashlib.sha512(a.encode() + b"body").digest()
