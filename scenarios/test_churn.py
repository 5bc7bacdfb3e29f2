"""Ready chaos scenarios, run by the default test command (``pytest``; as root: the netns backend).

Each one is a ``FabricMachine`` with a chosen set of faults, run against the session's
two-mesh cluster (``@pytest.mark.fabric(meshes=2)``, whatever ``--mesh-count`` says) with the
``chaos-ci`` hypothesis profile: 3 examples of at most 6 steps, about 10-15 s per scenario
here. ``--hypothesis-profile chaos-long`` runs 50 examples of up to 25 steps. A failure prints
the shrunk step sequence and the seed that reproduces it (docs/chaos.md).
"""

from __future__ import annotations

import pytest

from pytest_meshfabric.stateful import FabricMachine, run_machine

pytestmark = pytest.mark.fabric(meshes=2)


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


class SlowLinksAndPartitions(FabricMachine):
    """Produces into both meshes while a link is slowed (20-200 ms each way) and the meshes are cut apart."""

    faults = frozenset({"latency", "partition"})


class BrokerCrashAndRecovery(FabricMachine):
    """kill -9 of brokers between produces: acknowledged records survive the restart."""

    faults = frozenset({"kill", "restart"})
    churn_types = ("broker",)


@pytest.mark.parametrize("machine", [ChurnInOneMesh, PartitionBetweenMeshes, CrossMeshProduceUnderChurn,
                                     SlowLinksAndPartitions, BrokerCrashAndRecovery], ids=lambda m: m.__name__)
def test_scenario(machine, fabric, nemesis):
    run_machine(machine, fabric, nemesis)
