"""The checkers bite: a broker that acknowledges records before writing them loses them on
kill -9, and a chaos run finds that loss and shrinks it to produce → kill."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

from fabric.services.log import UNSAFE_BUFFERED_ENV
from pytest_meshfabric.nemesis import Nemesis
from pytest_meshfabric.stateful import ChaosFailure, FabricMachine, run_machine

# About 2.5 minutes here: ~80 examples while shrinking, each ending with a broker restart, most
# with a produce to the killed broker that waits out its timeout.


class KillTheBroker(FabricMachine):
    """Produce to mesh1's broker and kill it: the smallest search space that holds the bug."""

    faults = frozenset({"kill"})
    churn_types = ("broker",)
    targets = ("mesh1.broker",)
    # A produce to the live broker takes milliseconds; one to the killed broker waits this out
    # (3 s by default: three quarters of the test's time went to those waits).
    produce_timeout = 1.0


def test_a_broker_acking_unwritten_records_is_caught_and_shrunk(fabric_factory, monkeypatch):
    monkeypatch.setenv(UNSAFE_BUFFERED_ENV, "1")  # the planted bug, inherited by the node processes
    cluster = fabric_factory(meshes=1, types=["broker", "gateway"])
    chaos = Nemesis(cluster)
    try:
        with pytest.raises(ChaosFailure) as failure:
            run_machine(KillTheBroker, cluster, chaos, seed=5, settings=settings(
                max_examples=10, stateful_step_count=4, deadline=None, database=None, derandomize=True,
                phases=[Phase.generate, Phase.shrink], print_blob=False))
    finally:
        chaos.close()
    report = str(failure.value)
    assert "LOST (acknowledged, never fetched back)" in report or "forgot records it acknowledged" in report
    steps = KillTheBroker.last_failure
    assert steps is not None and len(steps) <= 3, steps
    assert steps[0].startswith("#0 produce") and any(s.startswith("kill -9 mesh1.broker") for s in steps), steps
    print("shrunk to:", *steps, sep="\n  ")


def test_without_the_bug_the_same_search_finds_nothing(fabric_factory):
    cluster = fabric_factory(meshes=1, types=["broker", "gateway"])
    chaos = Nemesis(cluster)
    try:
        run_machine(KillTheBroker, cluster, chaos, seed=5, settings=settings(
            max_examples=3, stateful_step_count=4, deadline=None, database=None, derandomize=True))
    finally:
        chaos.close()
