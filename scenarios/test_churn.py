"""Ready chaos scenarios: ``pytest scenarios/ --mesh-count 2`` (as root: the netns backend).

Each one is a ``FabricMachine`` with a chosen set of faults, run against the session's cluster
with the ``ci`` hypothesis profile (a few short examples); ``--hypothesis-profile long`` runs
many more. A failure prints the shrunk step sequence and the seed that reproduces it.

Not in CI yet: on this 2-core machine a scenario takes minutes (every restart waits for the
node and for convergence, and every example ends with a heal and the checkers); the CI gate is
tests/chaos (the planted bug and its control run).
"""

from __future__ import annotations

import pytest

from pytest_meshfabric.stateful import FabricMachine, run_machine


class ChurnInOneMesh(FabricMachine):
    """Kill, restart and pause mesh1's nodes while producing into both meshes."""

    faults = frozenset({"kill", "restart", "pause"})
    churn_meshes = ("mesh1",)


class PartitionBetweenMeshes(FabricMachine):
    """Cut the meshes apart and heal them, with produces in between."""

    faults = frozenset({"partition"})


class CrossMeshProduceUnderChurn(FabricMachine):
    """Cross-mesh produces while mesh2's brokers and gateways are killed and restarted."""

    faults = frozenset({"kill", "restart"})
    churn_meshes = ("mesh2",)
    churn_types = ("broker", "gateway")
    targets = ("mesh2.broker",)


class BrokerCrashAndRecovery(FabricMachine):
    """kill -9 of brokers between produces: acknowledged records survive the restart."""

    faults = frozenset({"kill", "restart"})
    churn_types = ("broker",)


@pytest.mark.parametrize("machine", [ChurnInOneMesh, PartitionBetweenMeshes, CrossMeshProduceUnderChurn,
                                     BrokerCrashAndRecovery], ids=lambda m: m.__name__)
def test_scenario(machine, fabric, nemesis):
    if len(fabric.meshes) < 2 and machine is not ChurnInOneMesh and machine is not BrokerCrashAndRecovery:
        pytest.skip("needs two meshes: run with --mesh-count 2")
    run_machine(machine, fabric, nemesis)
