"""The chaos harness: scenario throughput, and re-convergence after faults, versus cluster size.

For each cluster size (meshes x nodes per mesh, default 1x4, 2x5 and 4x5; a fifth node is a
second compute) on the netns backend (local when not root: no network faults), through the
plugin's own ``FabricSession`` and ``Nemesis``:

* **baseline**: bring-up from nothing to ready (boot traces in, directories converged);
* **partition heal**: the meshes cut apart (one node isolated when there is one mesh), held
  until every gateway (every other node) dropped the other side, then healed: time until
  every directory is whole again;
* **kill and restart**: a broker SIGKILLed, time until every directory dropped it; then
  restarted (same identity and address): time until it is ready, and until every directory
  lists it again;
* **scenarios** (not with ``--no-scenarios``, as in the suite): each ready scenario of
  ``scenarios/test_churn.py`` run with the ``chaos-ci`` profile and a fixed seed: steps per
  minute, wall time per step by fault kind (the rule, its invariant checks and hypothesis'
  drawing), and the end of every example (heal, re-converge, checkers).

Ratios are against the same cluster's bring-up in the same run. Run: ``python -m bench.chaos
[--sizes 1x4,2x5,4x5] [--rounds 3] [--seed 1] [--no-scenarios]`` (re-runs itself under
``unshare -n`` as root); ``--report`` prints the tables of the last run again.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings

from bench.isolation import ensure_isolated
from bench.report import last_run, load, save, table
from pytest_meshfabric import (ChaosFailure, Cluster, ClusterSpec, FabricMachine, FabricSession, FabricSettings,
                               HarnessTimeout, Nemesis, run_machine, wait_until)
from pytest_meshfabric.backends import netns_unavailable_reason
from pytest_meshfabric.cluster import DEFAULT_TYPES
from scenarios.test_churn import (BrokerCrashAndRecovery, ChurnInOneMesh, CrossMeshProduceUnderChurn,
                                  PartitionBetweenMeshes)

SCENARIOS = (ChurnInOneMesh, PartitionBetweenMeshes, CrossMeshProduceUnderChurn, BrokerCrashAndRecovery)
TWO_MESH_ONLY = (CrossMeshProduceUnderChurn,)  # produces to mesh2.broker
WAIT = 60.0  # seconds any single wait may take before the benchmark gives up


def types_for(per_mesh: int) -> tuple[str, ...]:
    """``per_mesh`` node types: the default four, then more compute nodes."""
    return (DEFAULT_TYPES + ("compute",) * per_mesh)[:per_mesh]


def clock(action: Callable[[], Any]) -> float:
    """Seconds ``action()`` took."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def step_kind(text: str) -> str:
    """The fault kind of a step line of ``FabricMachine`` (``#3 produce ... ok`` → ``produce ok``)."""
    words = text.split()
    if words[0].startswith("#"):
        return "produce ok" if ": ok (" in text else "produce failed"
    return {"kill": "kill -9", "heal": "heal (partition)"}.get(words[0], words[0])


# -- re-convergence ----------------------------------------------------------------


def partition_heal(cluster: Cluster, chaos: Nemesis) -> float:
    """Cut (meshes apart, or one node off), wait until it shows, heal: seconds to re-converge."""
    if len(cluster.meshes) > 1:
        event = chaos.partition(list(cluster.meshes))
        gateways = [n for n in cluster.nodes if n.type == "gateway"]

        def cut() -> bool:
            return all(g.directory_names(alive_only=False) <= cluster[g.mesh].names for g in gateways)
    else:
        victim = cluster["mesh1"].of_type("compute")[-1]
        event = chaos.isolate(victim)
        others = [n for n in cluster.nodes if n is not victim]

        def cut() -> bool:
            return all(victim.name not in n.directory_names(alive_only=False) for n in others)
    wait_until(cut, WAIT, "the partition to show in the directories")
    return clock(lambda: (chaos.heal_event(event), cluster.wait_converged(WAIT)))


def kill_restart(cluster: Cluster, chaos: Nemesis) -> tuple[float, float, float]:
    """Kill the last mesh's broker: (seconds until every directory dropped it, restart to
    ready, restart to every directory listing it again)."""
    victim = cluster[list(cluster.meshes)[-1]]["broker"]
    chaos.kill(victim)
    removed = clock(lambda: cluster.wait_converged(WAIT))
    start = time.perf_counter()
    chaos.restart(victim)
    ready = time.perf_counter() - start
    cluster.wait_converged(WAIT)
    return removed, ready, time.perf_counter() - start


def guarded(measurement: Callable[[Cluster, Nemesis], Any], cluster: Cluster, chaos: Nemesis,
            errors: list[str]) -> Any:
    """``measurement(cluster, chaos)``, or ``None`` with the timeout in ``errors`` and the cluster restored."""
    try:
        return measurement(cluster, chaos)
    except HarnessTimeout as exc:
        errors.append(f"{measurement.__name__}: {exc}")
        chaos.restore(WAIT)
        return None


# -- scenario throughput -----------------------------------------------------------


@dataclass
class ScenarioRun:
    """What one scenario did: its steps (kind, seconds) and the end of each example (seconds)."""

    name: str
    steps: list[tuple[str, float]] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    failure: str | None = None


def recorded(machine: type[FabricMachine], run: ScenarioRun) -> type[FabricMachine]:
    """``machine``, timing each step (since the previous one) and each example's teardown into ``run``."""

    class Recorded(machine):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            super().__init__()
            self._mark = time.perf_counter()

        def _step(self, text: str) -> None:
            super()._step(text)
            now = time.perf_counter()
            run.steps.append((step_kind(text), now - self._mark))
            self._mark = now

        def teardown(self) -> None:
            start = time.perf_counter()
            try:
                super().teardown()
            finally:
                run.ends.append(time.perf_counter() - start)

    Recorded.__name__ = Recorded.__qualname__ = machine.__name__
    return Recorded


def run_scenario(machine: type[FabricMachine], cluster: Cluster, chaos: Nemesis, seed: int) -> ScenarioRun:
    """Run ``machine`` once with the ``chaos-ci`` profile (no example database) and ``seed``."""
    run = ScenarioRun(machine.__name__)
    profile = settings(settings.get_profile("chaos-ci"), database=None)
    start = time.perf_counter()
    try:
        run_machine(recorded(machine, run), cluster, chaos, settings=profile, seed=seed)
    except ChaosFailure as exc:
        run.failure = str(exc)
    except Exception as exc:  # e.g. hypothesis' FlakyFailure: failed once, passed on replay
        causes = getattr(exc, "exceptions", [])
        run.failure = "\n".join([f"{type(exc).__name__}: {exc}", *(str(c) for c in causes)])
    run.wall_s = time.perf_counter() - start
    return run


# -- one cluster size --------------------------------------------------------------


def measure(session: FabricSession, meshes: int, per_mesh: int, rounds: int, seed: int,
            scenarios: bool = True) -> dict[str, Any]:
    """Every measurement on one cluster size (the scenarios' only if ``scenarios``); the
    cluster is brought up twice (baseline)."""
    spec = ClusterSpec(meshes=meshes, types=types_for(per_mesh))
    bringups = []
    for _ in range(2):
        start = time.perf_counter()
        cluster = session.start_cluster(spec)
        bringups.append(time.perf_counter() - start)
        if len(bringups) < 2:
            session.stop_cluster(cluster)
    chaos = Nemesis(cluster)
    result: dict[str, Any] = {"size": f"{meshes}x{per_mesh}", "nodes": len(cluster.nodes), "bringup_s": bringups,
                              "partition": "partition (meshes)" if meshes > 1 else "isolate (one node)"}
    try:
        errors: list[str] = []
        result["errors"] = errors
        network = cluster.backend.network_faults
        heals = [guarded(partition_heal, cluster, chaos, errors) for _ in range(rounds if network else 0)]
        result["partition_heal_s"] = [h for h in heals if h is not None]
        kills = [k for k in (guarded(kill_restart, cluster, chaos, errors) for _ in range(rounds)) if k is not None]
        result["kill_removed_s"], result["restart_ready_s"], result["restart_converged_s"] = (
            [k[i] for k in kills] for i in range(3))
        ready = [m for m in SCENARIOS if meshes > 1 or m not in TWO_MESH_ONLY] if scenarios else []
        result["scenarios"] = [vars(run_scenario(m, cluster, chaos, seed)) for m in ready]
    finally:
        try:
            chaos.close()
        finally:
            session.stop_cluster(cluster)
    return result


# -- report ------------------------------------------------------------------------


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def convergence_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in results:
        base = median(r["bringup_s"])
        what = [("bring-up to ready + converged (baseline)", r["bringup_s"]),
                (f"{r['partition']} heal -> converged", r["partition_heal_s"]),
                ("kill -9 -> dropped everywhere", r["kill_removed_s"]),
                ("restart of the killed node -> ready", r["restart_ready_s"]),
                ("restart of the killed node -> converged", r["restart_converged_s"])]
        rows += [[r["size"], r["nodes"], label, median(s), max(s), median(s) / base] for label, s in what if s]
    return rows


def throughput_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in results:
        for s in r["scenarios"]:
            steps = len(s["steps"])
            rows.append([r["size"], s["name"], steps, len(s["ends"]), s["wall_s"], steps / s["wall_s"] * 60,
                         statistics.fmean(s["ends"]) if s["ends"] else float("nan"),
                         "FAILED" if s["failure"] else "ok"])
    return rows


def kind_rows(results: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Mean seconds per step by fault kind (columns: cluster sizes), with the count."""
    by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        for s in r["scenarios"]:
            for kind, seconds in s["steps"]:
                by_kind[kind][r["size"]].append(seconds)
            by_kind["end of example (heal, converge, check)"][r["size"]] += s["ends"]
    sizes = [r["size"] for r in results]
    rows = [[kind, *(f"{statistics.fmean(v[z]):.2f} ({len(v[z])})" if v[z] else "-" for z in sizes)]
            for kind, v in sorted(by_kind.items())]
    return ["step kind", *[f"{z} mean s (n)" for z in sizes]], rows


def report(saved: dict[str, Any]) -> str:
    """The three tables of a run (as saved in ``bench/results/chaos.json``)."""
    results, seed = saved["runs"], saved["seed"]
    headers, rows = kind_rows(results)
    failures = [f"FAILED {r['size']} {s['name']}:\n{s['failure']}" for r in results for s in r["scenarios"]
                if s["failure"]]
    failures += [f"TIMED OUT {r['size']} {e}" for r in results for e in r.get("errors", [])]
    parts = [
        f"chaos on the {saved['backend']} backend, measured {saved['machine']['date']} on "
        f"{saved['machine']['cpus']} CPUs: re-convergence after faults ({saved['rounds']} rounds; ratio: median / "
        "the same cluster's bring-up)",
        table(["cluster", "nodes", "what", "p50 s", "max s", "/ bring-up"], convergence_rows(results))]
    if any(r["scenarios"] for r in results):  # not with --no-scenarios
        parts += [
            f"scenario throughput (chaos-ci profile: 3 examples of <= 6 steps, seed {seed})",
            table(["cluster", "scenario", "steps", "examples", "wall s", "steps/min", "example end s", "result"],
                  throughput_rows(results)),
            "wall time per step by kind (the rule, then the invariants; a produce to a broker that just went "
            "down fails once its gateway suspects it and one more attempt times out, or at the client's 3 s)",
            table(headers, rows)]
    return "\n\n".join(parts + failures)


def main(args: argparse.Namespace) -> None:
    if args.report:
        print(report(last_run("chaos")))
        return
    backend = "netns" if netns_unavailable_reason() is None else "local"
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    session = FabricSession(FabricSettings(backend=backend), worker="bench")
    try:
        results = [measure(session, m, n, args.rounds, args.seed, args.scenarios) for m, n in sizes]
    finally:
        session.close()
    path = save("chaos", {"backend": backend, "rounds": args.rounds, "seed": args.seed, "runs": results})
    print("\n" + report(load("chaos")))  # as saved, as --report reads it
    print(f"\nresults: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1x4,2x5,4x5", help="meshes x nodes per mesh, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="partitions and kills per cluster size (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="the scenarios' hypothesis seed (default 1)")
    parser.add_argument("--no-scenarios", dest="scenarios", action="store_false",
                        help="measure re-convergence only, not the scenarios' throughput (~40 s less a cluster size)")
    parser.add_argument("--report", action="store_true", help="print the tables of the last saved run and exit")
    arguments = parser.parse_args()
    if not arguments.report:
        ensure_isolated("bench.chaos")
    main(arguments)
