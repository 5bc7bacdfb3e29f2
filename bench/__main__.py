"""Run the whole benchmark suite: ``python -m bench`` (~4 minutes on this machine's 2 cores).

Each benchmark runs in its own process (inside a loopback-only namespace when root) and
writes JSON under ``bench/results/``; this prints the summary against the project's targets
and rewrites the table in README.md between the ``bench:start``/``bench:end`` markers.
``--full`` (~8-9 minutes) also measures what is context for the fabric's developers rather than a
target's figure: what the spans' and the encoder's C parts and the loop export save, tracing's
costs one cluster at a time (the suite measures them side by side only) and with 1% of traces
recorded but not exported, bring-up on every backend (the suite: the one the ``fabric`` fixture
picks) and a third time each, the chaos scenarios' throughput, and a second, smaller chaos cluster.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.report import RESULTS, load, machine, table
from bench.side_by_side import A_A, versus

SUITE = {
    "boot": ["--rounds", "40"],
    "produce": ["--records", "300", "--concurrency", "32", "--modes", "on-off"],
    "side_by_side": ["--rounds", "12", "--modes", "suite"],
    "cluster": ["--rounds", "5"],
    "loss": ["--rounds", "2", "--hold", "10"],
    "bringup": ["--repeat", "2", "--backends", "auto"],
    "chaos": ["--sizes", "2x5", "--rounds", "2", "--no-scenarios"],
    "directory": [],
}
FULL = SUITE | {  # --full
    "produce": ["--records", "300", "--concurrency", "32", "--modes", "all"],
    "side_by_side": ["--rounds", "12", "--modes", "all"],
    "bringup": ["--repeat", "3", "--backends", "all"],
    "chaos": ["--sizes", "1x4,2x5", "--rounds", "2"],
}
README = Path(__file__).parent.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


SUMMARISED = ("boot", "produce", "cluster", "bringup")  # the results the summary needs (chaos: if there)


def summary(results: Path = RESULTS) -> tuple[list[list], dict]:
    """(rows of the summary table, the machine the results came from), from the JSON files
    in ``results`` (default: the last run's, ``bench/results/``)."""
    boot, produce, cluster, bringup = (load(n, results) for n in SUMMARISED)
    rows = []
    ready, bind = boot["restart"]["mesh.node.ready"]["p50_ms"], boot["bind"]["p50_ms"]
    by_round = ""  # each round's restart over its own bind, where recorded: the ratio's spread
    if "restart_ratio_ci95" in boot:
        by_round = ", rounds {:.2f} to {:.2f}".format(*boot["restart_ratio_ci95"])
    rows.append(["boot: mesh.node.ready (restart) / bare endpoint bind", f"{ready:.2f} / {bind:.2f} ms{by_round}",
                 ready / bind, "<= 1.5x"])
    floor = produce["baseline"]["floor_p50_ms"]
    on, off = produce["runs"]["on"], produce["runs"]["off"]
    writer = on["cross-mesh, writer on gateway"]
    spread = produce.get("p50_ratio_ci95", {})

    def by_round(mode: str) -> str:  # each round's p50 over its own floor, where recorded
        return f", rounds {spread[mode][0]:.2f} to {spread[mode][1]:.2f}" if mode in spread else ""

    # the floor's parts are measured in a produce's rhythm (older results: each back to back)
    rhythm = ", in a produce's rhythm" if "raw_rtt_in_rhythm" in produce["baseline"] else ""
    rows.append([f"produce cross-mesh p50 (gateway writer) / (raw 2-process round trip + fsync{rhythm})",
                 f"{writer['p50_ms']:.2f} / {floor:.2f} ms{by_round('on')}", writer["p50_ms"] / floor, "<= 1.5x"])
    writer_off = off["cross-mesh, writer on gateway"]
    rows.append(["  the same with the SDK off (spans cost next to nothing, no trace context sent)",
                 f"{writer_off['p50_ms']:.2f} / {floor:.2f} ms{by_round('off')}", writer_off["p50_ms"] / floor,
                 "(context)"])
    back_to_back = produce["baseline"].get("floor_back_to_back_p50_ms")
    if back_to_back:  # context: the floor's two parts each in a tight loop (the floor before the rhythm)
        rows.append(["  the same / (round trip + fsync, each back to back: commits the disk serves faster)",
                     f"{writer['p50_ms']:.2f} / {back_to_back:.2f} ms", writer["p50_ms"] / back_to_back, "(context)"])
    composite = produce["baseline"].get("raw_rtt_with_fsync")
    if composite:  # context, not a target: the floor measured as one round trip with the server's fsync in it
        rows.append(["  the same / one raw round trip with the server's fsync in it (composite)",
                     f"{writer['p50_ms']:.2f} / {composite['p50_ms']:.2f} ms", writer["p50_ms"] / composite["p50_ms"],
                     "(context)"])
    grown = produce["baseline"].get("grown_file_commit_in_rhythm")
    if grown:  # context: the floor with the broker's own, cheaper commit in place of the append's fsync
        stricter = produce["baseline"]["raw_rtt_in_rhythm"]["p50_ms"] + grown["p50_ms"]
        rows.append(["  the same / (raw round trip + the broker's commit: fdatasync into a grown file; in rhythm)",
                     f"{writer['p50_ms']:.2f} / {stricter:.2f} ms", writer["p50_ms"] / stricter, "(context)"])
    batched = batched_run(on)
    raw = produce["baseline"]["raw_throughput_mps"]
    rows.append(["batched produce throughput / raw stream throughput",
                 f"{batched['throughput_rps']:.0f} / {raw:.0f} rec/s", batched["throughput_rps"] / raw, ">= 0.5x"])
    paired = produce.get("tracing_cost", {})
    interval = produce.get("tracing_cost_ci95", {})
    for mode, label, target in (("on", "cost of tracing, every span recorded", "< 0.10"),
                                ("on, spans in Python", "  the same with spans made in Python only", "(context)"),
                                ("sampled 1%", "cost of tracing, 1% of traces sampled", "< 0.10"),
                                ("exported", "cost of tracing, every span exported over OTLP/HTTP", "< 0.10"),
                                ("exported, SDK thread", "  the same through the SDK's export thread", "(context)"),
                                ("exported, Python encoder", "  the same with the encoder in Python only", "(context)"),
                                ("exported, 1% sampled", "cost of tracing, 1% of traces exported", "< 0.10"),
                                ("off, second cluster", "  noise: a second cluster with the SDK off", "(context)")):
        runs = produce["runs"].get(mode)
        if not runs or ("tracing_cost" in produce and not paired):  # --modes on-off: costs measured side by side
            continue
        traced = runs["cross-mesh, writer on gateway"]["throughput_rps"]
        cost = paired.get(mode, 1 - traced / writer_off["throughput_rps"])  # paired by round when recorded
        measured = f"{traced:.0f} vs {writer_off['throughput_rps']:.0f} rec/s"
        if mode in interval:  # the rounds' spread: a ~95% confidence interval of the median cost
            measured += f", CI {interval[mode][0]:.2f} to {interval[mode][1]:.2f}"
        rows.append([f"{label} (gateway writer throughput vs SDK off)", measured, cost, target])
        if mode in ("on", "exported") and mode in produce.get("tracing_cpu_cost", {}):
            spent, low, high = (produce["node_cpu_us"][mode], *produce["tracing_cpu_cost_ci95"][mode])
            rows.append(["  the same in the nodes' CPU a record (gateway + broker; 1 - off / traced)",
                         f"{spent:.0f} vs {produce['node_cpu_us']['off']:.0f} µs, CI {low:.2f} to {high:.2f}",
                         produce["tracing_cpu_cost"][mode], "(context)"])
        batched_cost = produce.get("tracing_cost_batched", {})
        if mode in ("on", "exported") and mode in batched_cost:  # where a batch's one trace covers its records
            traced_batched, off_batched = (batched_run(produce["runs"][m])["throughput_rps"] for m in (mode, "off"))
            low, high = produce["tracing_cost_batched_ci95"][mode]
            rows.append(["  the same in batched throughput (one produce and one trace a batch)",
                         f"{traced_batched:.0f} vs {off_batched:.0f} rec/s, CI {low:.2f} to {high:.2f}",
                         batched_cost[mode], "< 0.10"])
        if mode == "exported" and "sink_cpu_us" in produce:  # the collector's share of the same two cores
            sink, nodes = produce["sink_cpu_us"][mode], produce["node_cpu_us"][mode]
            rows.append(["  the OTLP sink's CPU a record (the collector, on the same cores) / the nodes'",
                         f"{sink:.1f} / {nodes:.0f} µs (SDK off: {produce['sink_cpu_us']['off']:.1f})", sink / nodes,
                         "(context)"])
    if (results / "side_by_side.json").exists():
        rows += side_by_side_rows(load("side_by_side", results))
    rows += bringup_rows(bringup)
    rows += cluster_rows(cluster)
    loss = load("loss", results) if (results / "loss.json").exists() else {}
    if "rounds" in loss:  # not when it was skipped (no network namespaces)
        rows.append(loss_row(loss))
    rss = cluster["rss_mb"]["max"]
    rows.append(["memory per idle node (max RSS)", f"{rss:.1f} MB", rss / 60, "< 60 MB"])
    if "idle_cpu_pct" in cluster:  # context: what an idle node costs a core (gossip only)
        cpu = cluster["idle_cpu_pct"]["mean"]
        rows.append(["  CPU per idle node (mean of a 5-node mesh) / one core", f"{cpu:.2f}%", cpu / 100, "(context)"])
    if (results / "chaos.json").exists():
        rows += chaos_rows(load("chaos", results))
    if (results / "directory.json").exists():
        rows += directory_rows(load("directory", results))
    return rows, produce["machine"]


def batched_run(runs: dict) -> dict:
    """The writer's run in batches among one tracing mode's runs (its label names the batch size)."""
    return next(v for label, v in runs.items() if "batches" in label)


def side_by_side_rows(side_by_side: dict) -> list[list]:
    """Tracing's cost with each mode's cluster and an SDK-off one writing at the same moment
    (``bench/side_by_side.py``): the machine's drift hits both alike, so its rounds agree far
    more closely than ``bench.produce``'s; its A/A control is context."""
    rounds = side_by_side["settings"]["rounds"]
    rows = []
    for mode, done in side_by_side["modes"].items():
        if mode == A_A:
            label, target = "  noise: side by side, an SDK-off cluster beside another", "(context)"
        else:
            label, target = f"cost of tracing, {mode}, side by side (an SDK-off cluster writing at the same time)", "< 0.10"
        measured = _traced_vs_off(done["throughput_rps"], "rec/s", done["cost_ci95"])
        rows.append([label, f"{measured}, {rounds} rounds", done["cost"], target])
        if mode in ("every span recorded", "every span exported"):
            rows.append(["  the same in CPU a record (both nodes of each; 1 - off / traced)",
                         _traced_vs_off(done["node_cpu_us"], "µs", done["cpu_cost_ci95"]), done["cpu_cost"],
                         "(context)"])
            if "batched_cost" in done:  # measured side by side since the twenty-third round
                rows.append(["  the same in batched throughput (one produce and one trace a batch)",
                             _traced_vs_off(done["batched_throughput_rps"], "rec/s", done["batched_cost_ci95"]),
                             done["batched_cost"], "< 0.10"])
    return rows


def _traced_vs_off(sides: dict[str, float], unit: str, interval: list[float]) -> str:
    """``traced vs off unit, CI low to high``: a side-by-side row's measured column."""
    return f"{versus(sides)} {unit}, CI {interval[0]:.2f} to {interval[1]:.2f}"


def cluster_rows(cluster: dict) -> list[list]:
    """Failure detection after a kill (and a pause, when measured) against the 3 s target; a
    join's convergence against the gossip's tick, the interval rumors spread in (context)."""
    removed = cluster["kill_removed"]["p50_ms"] / 1e3
    rows = [["failure detection: kill -> removed from every directory", f"{removed:.2f} s", removed / 3.0, "< 3 s"]]
    if "pause_suspect" in cluster:
        paused = cluster["pause_suspect"]["p50_ms"] / 1e3
        rows.append(["failure detection: pause (SIGSTOP) -> suspected by every node", f"{paused:.2f} s",
                     paused / 3.0, "< 3 s"])
    if "join" in cluster and "config" in cluster:
        join, tick = cluster["join"]["p50_ms"], cluster["config"]["tick_interval"] * 1e3
        rows.append(["directory convergence: a join -> listed by every node / gossip tick",
                     f"{join:.0f} / {tick:.0f} ms", join / tick, "(context)"])
    return rows


def loss_row(loss: dict) -> list:
    """Kill -> removed with a share of every link's packets lost, and the live nodes removed meanwhile."""
    share, lossy = f"{loss['loss']:.0%}", loss["lossy_removed_p50_s"]
    live = loss["nodes"] - 1
    held = loss["hold_s"] * len(loss["rounds"])
    return [f"failure detection, {share} of packets lost: kill -> removed; live nodes removed",
            f"{lossy:.2f} s; {len(loss['live_removed'])} of {live} ({held:.0f} s)", lossy / 3.0, "< 3 s; 0"]


def bringup_rows(bringup: dict) -> list[list]:
    """Bring-up of 2 meshes against the target, then the other mesh counts against it (how it
    scales), and the same with every node a new interpreter against it (what the fork server saves)."""
    fastest: dict[int, tuple[float, dict]] = {}  # mesh count -> (median up, its run) on the fastest backend
    fresh: dict[int, tuple[float, dict]] = {}  # the same, nodes started as new interpreters
    for run in bringup["runs"]:
        up = statistics.median(run["up_s"])
        # results saved before the fork server have no "starts": all forked
        best = fresh if run.get("starts", "forked") == "fresh" else fastest
        if run["meshes"] not in best or up < best[run["meshes"]][0]:
            best[run["meshes"]] = (up, run)

    def label(run: dict) -> str:
        meshes = run["meshes"]
        return f"{meshes} mesh{'es' if meshes > 1 else ''} x {run['nodes'] // meshes} nodes ({run['backend']})"

    if 2 not in fastest:  # measured with other --meshes: each against the 3 s, for context
        return [[f"bring-up, {label(run)}, ready + converged", f"{up:.2f} s", up / 3.0, "(context)"]
                for _, (up, run) in sorted(fastest.items())]
    two, two_run = fastest[2]
    rows = [[f"bring-up, {label(two_run)}, ready + converged", f"{two:.2f} s", two / 3.0, "< 3 s"]]
    for meshes in sorted(m for m in fastest if m != 2):
        up, run = fastest[meshes]
        rows.append([f"  the same, {label(run)} / 2 meshes", f"{up:.2f} / {two:.2f} s", up / two, "(context)"])
    if 2 in fresh:
        up, run = fresh[2]
        rows.append([f"  the same, {label(run)}, every node a new interpreter (no fork server) / forked",
                     f"{up:.2f} / {two:.2f} s", up / two, "(context)"])
    if "first_up_s" in bringup and 1 in fastest:  # results saved before it was measured have none
        first, (one, _) = bringup["first_up_s"], fastest[1]
        rows.append(["  a process's first bring-up of 1 mesh (its fork servers start) / later ones",
                     f"{first:.2f} / {one:.2f} s", first / one, "(context)"])
    return rows


def chaos_rows(chaos: dict) -> list[list]:
    """Re-convergence after a partition heal on the largest cluster measured, against its bring-up."""
    run = max(chaos["runs"], key=lambda r: r["nodes"])
    bringup = statistics.median(run["bringup_s"])
    healed = statistics.median(run["partition_heal_s"]) if run["partition_heal_s"] else float("nan")
    return [[f"chaos: {run['partition']} heal -> re-converged ({run['size']}) / its bring-up",
             f"{healed:.2f} / {bringup:.2f} s", healed / bringup, "<= 1x"]]


def directory_rows(directory: dict) -> list[list]:
    """A produce's lookup (a broker by name) in the largest directory measured against the
    smallest: context for how a node's per-request work grows with the meshes it knows."""
    small, large = (str(size) for size in (min(directory["sizes"]), max(directory["sizes"])))
    us = directory["us_per_call"]
    by_name = (us[large]["resolve by name"], us[small]["resolve by name"])
    return [[f"directory: resolve a node by name, {int(large):,} entries / {small}",
             f"{by_name[0]:.2f} / {by_name[1]:.2f} µs", by_name[0] / by_name[1], "(context)"]]


def render(results: Path = RESULTS) -> str:
    rows, where = summary(results)
    loop = where.get("event_loop", "asyncio")
    cpu = f" ({where['cpu']})" if "cpu" in where else ""  # recorded since the twenty-third round
    head = (f"Measured {where['date']} on {where['cpus']} CPUs{cpu}, {where['platform']}, Python {where['python']}, "
            f"{loop} event loop "
            "(`python -m bench`; ratios are against baselines measured in the same run):\n\n")
    return head + table(["figure", "measured", "ratio", "target"], rows)


def update_readme(text: str) -> bool:
    readme = README.read_text()
    if START not in readme or END not in readme:
        return False
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    README.write_text(f"{before}{START}\n{text}\n{END}{after}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(SUITE), help="run only these benchmarks")
    parser.add_argument("--full", action="store_true",
                        help="also measure the developers' context: the C parts' and the loop export's savings, "
                             "the scenarios' throughput, every backend's bring-up (~8-9 minutes instead of ~4)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite README.md")
    parser.add_argument("--render", action="store_true",
                        help="run nothing: print the summary of the results there are (and rewrite README.md's table)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="with --render: read these (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.render and not all((args.results / f"{name}.json").exists() for name in SUMMARISED):
        print(f"no complete results in {args.results} (it needs {', '.join(SUMMARISED)}): run python -m bench first",
              file=sys.stderr)
        return 2
    started, suite = time.monotonic(), FULL if args.full else SUITE
    for name in [] if args.render else args.only or suite:
        print(f"\n=== bench.{name}", flush=True)
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", f"bench.{name}", *suite[name]], check=False)
        if done.returncode != 0:
            print(f"bench.{name} failed with exit code {done.returncode}", file=sys.stderr)
            return done.returncode
        print(f"=== bench.{name} took {time.monotonic() - began:.0f} s", flush=True)
    if not args.render:
        print(f"\n(the suite took {(time.monotonic() - started) / 60:.1f} min)")
    text = render(args.results)
    print("\n=== summary\n\n" + text)
    if not args.no_readme and update_readme(text):
        print(f"\n(README.md updated; machine: {machine()['platform']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
