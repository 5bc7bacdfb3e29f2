"""What "converged" means after a restart or a heal: every directory holds the process running
now, and after a heal it has heard every node again.

A restart keeps a node's name and id, so a directory that still holds the previous process's
entry looks converged by name (the entry stays alive until ``--suspect-after``). The chaos
scenarios' teardown once passed its convergence wait that way and then found the entry
suspect a second later; ``Cluster.divergence`` now compares incarnations too.

A cut does the same to every entry it silences: alive until ``--suspect-after``, whether or
not the node can be heard once the cut heals. The teardown once passed its wait right after a
heal and found a gateway's entries of the other mesh suspect a second later (its pulls were
still stuck on connections from before the heal); ``divergence(since=...)`` waits for each
entry to be heard after the heal.
"""

from __future__ import annotations

import time

import pytest

from pytest_meshfabric import wait_until

# Suspicion far away: an isolated node keeps every entry it holds alive for the whole test.
pytestmark = pytest.mark.fabric(meshes=1, types=["broker", "registry", "compute"],
                                node_args=["--heartbeat", "0.3", "--suspect-after", "30", "--remove-after", "60"])


def test_a_directory_holding_a_restarted_nodes_earlier_process_has_not_converged(fabric, nemesis):
    if not fabric.backend.network_faults:
        pytest.skip("isolating a node needs the netns backend (root)")
    observer, victim = fabric["mesh1"]["compute"], fabric["mesh1"]["registry"]
    before = next(e["incarnation"] for e in observer.directory() if e["name"] == victim.name)
    nemesis.isolate(observer)
    nemesis.kill(victim)
    nemesis.restart(victim)

    wait_until(lambda: set(fabric.divergence()) == {observer.name}, 10,
               "every node but the isolated one to hold the restarted process")
    assert f"an earlier process of ['{victim.name}']" in fabric.divergence()[observer.name]
    held = next(e for e in observer.directory() if e["name"] == victim.name)
    assert (held["state"], held["incarnation"]) == ("alive", before)  # by name alone: converged

    nemesis.heal()
    fabric.wait_converged(10)
    held = next(e for e in observer.directory() if e["name"] == victim.name)
    assert held["incarnation"] > before


def test_entries_not_heard_since_the_heal_have_not_converged(fabric, nemesis):
    if not fabric.backend.network_faults:
        pytest.skip("isolating a node needs the netns backend (root)")
    observer = fabric["mesh1"]["compute"]
    others = sorted(n.name for n in fabric.nodes if n is not observer)
    nemesis.isolate(observer)
    cut_at = time.monotonic()

    assert not fabric.divergence()  # by names and states alone: converged
    unheard = "missing [], unexpected [], not alive [], not heard since the heal {}".format
    expected = {observer.name: unheard(others), **{n: unheard([observer.name]) for n in others}}
    wait_until(lambda: fabric.divergence(since=cut_at) == expected, 10,
               "the others to hear each other after the cut, and none to hear the isolated node",
               describe=lambda _: str(fabric.divergence(since=cut_at)))

    nemesis.heal()
    healed_at = time.monotonic()
    fabric.wait_converged(10, since=healed_at)
    for node in fabric.nodes:
        asked_at = time.monotonic()
        assert all(asked_at - e["last_heard_s"] >= healed_at for e in node.directory() if e["name"] != node.name)
