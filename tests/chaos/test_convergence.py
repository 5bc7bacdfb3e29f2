"""What "converged" means after a restart: every directory holds the process running now.

A restart keeps a node's name and id, so a directory that still holds the previous process's
entry looks converged by name (the entry stays alive until ``--suspect-after``). The chaos
scenarios' teardown once passed its convergence wait that way and then found the entry
suspect a second later; ``Cluster.divergence`` now compares incarnations too.
"""

from __future__ import annotations

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
