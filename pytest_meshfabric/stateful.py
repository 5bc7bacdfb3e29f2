"""``FabricMachine``: hypothesis searches for fault sequences that break the fabric's promises.

::

    class Churn(FabricMachine):
        faults = frozenset({"kill", "restart", "pause"})

    def test_churn(fabric, nemesis):
        run_machine(Churn, fabric, nemesis)

Each example interleaves produces (same-mesh and cross-mesh, through the cluster's entry)
with faults (kill, restart, pause/resume, partition/heal, latency, spawn). After every step the
invariants that must always hold are checked (no node crashed on its own, no broker
acknowledged one offset for two values). At the end of every example the cluster is healed
and must re-converge (bounded), then the checkers run (:mod:`.checkers`). One cluster serves
every example: it is healed between them, never restarted.

A failure raises :class:`ChaosFailure` with the (shrunk) step sequence, the seed, the checkers'
report and the broken traces; ``pytest ... --hypothesis-seed=<seed>`` reruns it, and
hypothesis' database replays it first on the next run. Settings come from the hypothesis
profile: ``chaos-ci`` (the default here: a few short examples) or ``chaos-long``
(``--hypothesis-profile chaos-long``). They are not called ``ci``: hypothesis has a built-in
``ci`` profile (100 examples of 50 steps, loaded by itself when a CI variable is set), so
under ``default`` or ``ci`` a machine runs with ``chaos-ci``.
"""

from __future__ import annotations

import random
from typing import ClassVar

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test, invariant, precondition, rule

from . import artifacts
from . import latency as delay
from .checkers import PRODUCE_TIMEOUT, History, check_directories, check_queue, check_traces
from .cluster import Cluster
from .nemesis import FaultEvent, Nemesis
from .nodes import NodeHandle
from .waiting import HarnessTimeout

__all__ = ["ChaosFailure", "FabricMachine", "machine_settings", "run_machine"]

_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
#: No ``explain`` phase: it reruns a failing example many times, each against the live cluster.
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)
PROFILES = {"chaos-ci": dict(max_examples=3, stateful_step_count=6, phases=_PHASES, **_COMMON),
            "chaos-long": dict(max_examples=50, stateful_step_count=25, phases=_PHASES, **_COMMON)}
#: Profiles that were not chosen for chaos runs: hypothesis' own (``ci`` loads itself under CI).
_NOT_CHOSEN = ("default", "ci")
for _name, _values in PROFILES.items():
    try:
        settings.get_profile(_name)
    except InvalidArgument:  # not registered by the project already
        settings.register_profile(_name, **_values)


class ChaosFailure(AssertionError):
    """A chaos run broke a promise; the message has the steps, the seed and the checkers' report."""


def machine_settings() -> settings:
    """The loaded hypothesis profile, or ``chaos-ci`` under hypothesis' ``default`` or ``ci``; never a deadline."""
    chosen = settings.get_current_profile_name() not in _NOT_CHOSEN
    return settings(settings() if chosen else settings.get_profile("chaos-ci"), deadline=None)


def _key(node: NodeHandle) -> str:
    """A label stable across runs (names carry a random key): ``mesh1.broker.1``."""
    return node.data_dir.name


class FabricMachine(RuleBasedStateMachine):
    """Rules for produces and faults on a bound cluster; subclasses pick faults and targets."""

    cluster: ClassVar[Cluster]
    nemesis: ClassVar[Nemesis]
    seed: ClassVar[int | None] = None
    #: Which fault rules may run: kill, restart, pause, partition, latency, spawn.
    faults: ClassVar[frozenset[str]] = frozenset({"kill", "restart", "pause", "partition", "latency", "spawn"})
    churn_meshes: ClassVar[tuple[str, ...] | None] = None  # None: every mesh
    churn_types: ClassVar[tuple[str, ...]] = ("broker", "gateway", "registry", "compute")
    targets: ClassVar[tuple[str, ...] | None] = None  # produce targets; None: every mesh's broker
    spawn_types: ClassVar[tuple[str, ...]] = ("registry", "compute")
    max_down: ClassVar[int] = 1  # nodes killed or paused at once
    max_spawned: ClassVar[int] = 1
    latency_ms: ClassVar[tuple[int, int]] = (20, 200)  # the delay a slowed link gets, each way
    convergence_timeout: ClassVar[float] = 20.0
    #: How long a produce may take before it is recorded as indeterminate (``info``): a produce
    #: to a killed broker waits it out (the gateway cannot tell a dead peer from a slow one).
    produce_timeout: ClassVar[float] = PRODUCE_TIMEOUT
    last_failure: ClassVar[list[str] | None] = None  # the steps of the last failing example

    def __init__(self) -> None:
        super().__init__()
        self.history = History(self.cluster, timeout=self.produce_timeout)
        self.steps: list[str] = []
        self.killed: list[NodeHandle] = []
        self.paused: list[NodeHandle] = []
        self.cuts: list[FaultEvent] = []
        self.slowed: list[FaultEvent] = []
        self.spawned = 0
        self.first_event = len(self.nemesis.events)

    # -- helpers --

    def _step(self, text: str) -> None:
        self.steps.append(text)

    def _churnable(self) -> list[NodeHandle]:
        meshes = self.churn_meshes or tuple(self.cluster.meshes)
        return sorted((n for n in self.cluster.nodes if n.running and n is not self.cluster.entry
                       and n.mesh in meshes and n.type in self.churn_types and n not in self.nemesis.spawned),
                      key=_key)

    def _may_take_down(self) -> bool:
        return len(self.killed) + len(self.paused) < self.max_down and bool(self._churnable())

    def _draw(self, data: st.DataObject, nodes: list[NodeHandle]) -> NodeHandle:
        key = data.draw(st.sampled_from([_key(n) for n in nodes]), label="node")
        return next(n for n in nodes if _key(n) == key)

    def _network(self) -> bool:
        return "partition" in self.faults and self.cluster.backend.network_faults

    def _latency(self) -> bool:
        """Whether ``latency`` may run: chosen, and packets can be delayed here (else never drawn)."""
        return ("latency" in self.faults and self.cluster.backend.network_faults
                and delay.unavailable_reason() is None)

    def _links(self) -> list[NodeHandle]:
        """Nodes whose links may be slowed: every running node but spawned ones (the entry too)."""
        return sorted((n for n in self.cluster.nodes if n.running and n not in self.nemesis.spawned), key=_key)

    # -- rules --

    @rule(data=st.data())
    def produce(self, data: st.DataObject) -> None:
        targets = self.targets or tuple(f"{m}.broker" for m in self.cluster.meshes)
        target = data.draw(st.sampled_from(sorted(targets)), label="target")
        op = self.history.produce(target)
        where = "same-mesh" if target.startswith(f"{self.cluster.entry.mesh}.") else "cross-mesh"
        self._step(f"{op.describe()} [{where}]")

    @precondition(lambda self: "kill" in self.faults and self._may_take_down())
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        node = self._draw(data, self._churnable())
        self.nemesis.kill(node)
        self.killed.append(node)
        self._step(f"kill -9 {node.name}")

    @precondition(lambda self: "restart" in self.faults and (self.killed or self._churnable()))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        node = self._draw(data, sorted(self.killed, key=_key) or self._churnable())
        self.nemesis.restart(node)
        if node in self.killed:
            self.killed.remove(node)
        self._step(f"restart {node.name}")

    @precondition(lambda self: "pause" in self.faults and self._may_take_down())
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        node = self._draw(data, self._churnable())
        self.nemesis.pause(node)
        self.paused.append(node)
        self._step(f"pause {node.name}")

    @precondition(lambda self: bool(self.paused))
    @rule()
    def resume(self) -> None:
        node = self.paused.pop()
        self.nemesis.resume(node)
        self._step(f"resume {node.name}")

    @precondition(lambda self: self._network() and not self.cuts)
    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        kinds = ["meshes", "isolate"] if len(self.cluster.meshes) > 1 else ["isolate"]
        if data.draw(st.sampled_from(kinds), label="partition") == "meshes":
            self.cuts.append(self.nemesis.partition(list(self.cluster.meshes)))
        else:
            self.cuts.append(self.nemesis.isolate(self._draw(data, self._churnable() or [self.cluster.entry])))
        self._step(f"{self.cuts[-1].kind} {self.cuts[-1].detail}")

    @precondition(lambda self: bool(self.cuts))
    @rule()
    def heal(self) -> None:
        self.nemesis.heal_event(self.cuts.pop())
        self._step("heal the partition")

    @precondition(lambda self: self._latency() and not self.slowed and len(self._links()) > 1)
    @rule(data=st.data())
    def latency(self, data: st.DataObject) -> None:
        a = self._draw(data, self._links())
        b = self._draw(data, [n for n in self._links() if n is not a])
        ms = data.draw(st.integers(*self.latency_ms), label="ms")
        self.slowed.append(self.nemesis.latency((a, b), ms))
        self._step(f"latency {ms} ms each way between {a.name} and {b.name}")

    @precondition(lambda self: bool(self.slowed))
    @rule()
    def heal_latency(self) -> None:
        self.nemesis.heal_event(self.slowed.pop())
        self._step("heal the latency")

    @precondition(lambda self: "spawn" in self.faults and self.spawned < self.max_spawned)
    @rule(data=st.data())
    def spawn(self, data: st.DataObject) -> None:
        mesh = data.draw(st.sampled_from(sorted(self.cluster.meshes)), label="mesh")
        node = self.nemesis.spawn(mesh, data.draw(st.sampled_from(self.spawn_types), label="type"))
        self.spawned += 1
        self._step(f"spawn {node.name}")

    # -- invariants --

    @invariant()
    def no_node_died_on_its_own(self) -> None:
        crashed = [n.name for n in self.cluster.nodes if n.ready and not n.alive and n not in self.killed]
        assert not crashed, f"node(s) exited although no fault stopped them: {crashed}"

    @invariant()
    def no_offset_acknowledged_twice(self) -> None:
        conflicts = self.history.conflicting_acks()
        assert not conflicts, "a broker forgot records it acknowledged:\n" + "\n".join(conflicts)

    # -- the end of every example --

    def teardown(self) -> None:
        problems: list[str] = []
        try:
            self.nemesis.restore(self.convergence_timeout)
        except HarnessTimeout as exc:
            problems.append(f"not converged {self.convergence_timeout:g}s after heal: {exc}")
        problems += [f"directory: {p}" for p in check_directories(self.cluster, 1.0)]
        try:
            queue = check_queue(self.history)
            trace_issues, bad_traces = check_traces(self.cluster.store, self.history,
                                                    self.nemesis.events[self.first_event:])
        finally:
            self.history.close()
        if not queue.ok:
            problems.append(str(queue))
        problems += [f"trace: {p}" for p in trace_issues]
        if problems:
            type(self).last_failure = list(self.steps)
            raise ChaosFailure(self.explain(problems, bad_traces))

    def explain(self, problems: list[str], bad_traces: list) -> str:
        """The failure report: checks, steps, seed, faults and the broken traces."""
        for trace in bad_traces:
            artifacts.note(trace, f"a chaos run's produce trace did not stitch:\n{trace.render()}", key=("chaos",))
        lines = [f"chaos run of {type(self).__name__} failed ({self.history.summary()}):"]
        lines += [f"  {p}" for p in problems]
        lines += ["steps of this example (hypothesis shrinks it; the last report is the minimal one):"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)] or ["  (no steps)"]
        lines += [f"seed: {self.seed}  (rerun: pytest <this test> --hypothesis-seed={self.seed}; the failing "
                  "example is also replayed from the hypothesis database)",
                  "faults (times from the nemesis's start):",
                  *[f"  {e.describe(self.nemesis.started)}" for e in self.nemesis.events[self.first_event:]]]
        lines += [t.render() for t in bad_traces[:3]]
        return "\n".join(lines)


def run_machine(machine: type[FabricMachine], cluster: Cluster, nemesis: Nemesis, *,
                settings: settings | None = None, seed: int | None = None) -> None:
    """Run ``machine`` against ``cluster`` (bound for every example) with ``settings`` (default:
    :func:`machine_settings`) and ``seed`` (default: ``--hypothesis-seed``, else random)."""
    forced = getattr(hypothesis.core, "global_force_seed", None)
    machine.cluster, machine.nemesis = cluster, nemesis
    machine.seed = seed if seed is not None else forced if forced is not None else random.getrandbits(32)
    machine.last_failure = None
    test = get_state_machine_test(machine, settings=settings or machine_settings())
    hypothesis.seed(machine.seed)(test)
    test()
