"""Tracing's cost with both clusters running at once: ``python -m bench.side_by_side``.

``bench.produce`` measures each tracing mode on a cluster of its own, one cluster at a time,
and pairs each mode's run with the SDK-off run of the same round. Those runs are ~1-2 s apart,
and this shared machine changes speed from one second to the next: a pair's cost moves by
±0.15-0.2 and the median of 12 rounds by ±0.1, wider than the 10% the target allows (an A/A
control with two SDK-off clusters shows it: docs/performance-rounds.md, twenty-second round).

Here each round starts two fresh clusters, the SDK off and the mode's, both warmed up, and
runs their writers at the same moment (the gateway's own writer, ``records`` at
``concurrency`` in flight each, as ``bench.produce``'s): whatever the machine does meanwhile
happens to both. The two clusters share the two cores, so each runs nearer the machine's
limit than a cluster alone, and what tracing costs in CPU shows more in throughput. A round's
cost is 1 - the mode's throughput / the SDK-off cluster's, and the same from the nodes' CPU a
record; the figure is the median of the rounds with a ~95% interval. Each pair then writes
again, both at once, in batches (``concurrency`` records a produce, ``BATCHES_IN_FLIGHT`` produces
in flight, ``BATCHED`` times the records: one produce and one trace a batch, as
``bench.produce``'s batched run): tracing's cost in batched throughput, measured the same way.
The modes: every span recorded, every span exported, 1% of traces recorded and 1% exported
(head sampling, the standard variables; ``--modes suite``, the suite's, leaves 1% recorded
out). The A/A control runs two SDK-off clusters the same way: its cost is the measurement's own
noise and any bias between the two clusters' places.
Exporting clusters post to the OTLP sink (``bench/otlp_sink.py``), which runs in this process,
on the same cores, for whichever cluster exports.
``--report`` prints the last saved run's table again.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import cpu
from bench.isolation import ensure_isolated
from bench.otlp_sink import OtlpSink
from bench.produce import gateway_writes, start_warm_cluster, stop_cluster
from bench.produce_costs import paired_costs, paired_cpu_costs
from bench.report import announced_last_run, median_interval, save, table
from fabric.launcher import NodeProcess

OFF = {"OTEL_SDK_DISABLED": "true"}
SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}  # 1% of traces
A_A = "A/A: SDK off beside SDK off"  # the control: its "cost" is the design's own noise
BATCHED = 5  # a pair's batched run writes this many times the records of its run of lone produces
BATCHES_IN_FLIGHT = 4  # as bench.produce's batched run
MODES = ("every span recorded", "every span exported", "1% of traces recorded", "1% of traces exported", A_A)
# The suite's (--modes suite): 1% exported records what 1% recorded does and exports it too, so
# its cost bounds the other's from above; leaving that one out saves a fifth of the run.
MODE_SETS = {"all": MODES, "suite": tuple(mode for mode in MODES if mode != "1% of traces recorded")}


def mode_env(mode: str, endpoint: str) -> dict[str, str]:
    """The environment of the cluster measured beside the SDK-off one (exports go to ``endpoint``)."""
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    return {"every span recorded": {}, "every span exported": exporting,
            "1% of traces recorded": SAMPLED, "1% of traces exported": {**exporting, **SAMPLED},
            A_A: OFF}[mode]


def run_together(clusters: dict[str, dict[str, NodeProcess]], records: int,
                 **options: int | bool) -> dict[str, dict[str, float]]:
    """Each cluster's writer started at the same moment, ``records`` each (``options``: the
    options of ``gateway_writes``): ``{name: {throughput_rps, node_cpu_us}}`` (the gateway's and
    the broker's CPU a record, over the time both writers ran)."""
    pids = {f"{name} {node}": nodes[node].pid for name, nodes in clusters.items() for node in ("gw", "b2")}
    start = threading.Barrier(len(clusters) + 1)
    throughput: dict[str, float] = {}
    errors: list[BaseException] = []

    def write(name: str) -> None:
        nodes = clusters[name]
        start.wait()
        try:
            throughput[name] = gateway_writes(nodes, records, **options)["throughput_rps"]
        except Exception as exc:  # noqa: BLE001 (raised again on the calling thread)
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(name,)) for name in clusters]
    for writer in writers:
        writer.start()
    before = cpu.reading(pids)
    start.wait()
    for writer in writers:
        writer.join()
    spent = cpu.per_op(before, cpu.reading(pids), records)
    if errors:
        raise errors[0]
    return {name: {"throughput_rps": throughput[name],
                   "node_cpu_us": spent[f"{name} gw"]["total"] + spent[f"{name} b2"]["total"]} for name in clusters}


def costs(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median cost of a mode's rounds and its ~95% interval, in throughput and in CPU (each
    round's pair as ``bench.produce`` pairs a mode with the SDK off), and in batched throughput
    (``batched_*``) where the rounds have batched runs."""
    sides = {side: [r[side] for r in rounds] for side in ("traced", "off")}
    by_throughput, by_cpu = paired_costs(sides)["traced"], paired_cpu_costs(sides)["traced"]
    done = {"cost": statistics.median(by_throughput), "cost_ci95": median_interval(by_throughput),
            "cpu_cost": statistics.median(by_cpu), "cpu_cost_ci95": median_interval(by_cpu),
            "throughput_rps": _medians(sides, "throughput_rps"), "node_cpu_us": _medians(sides, "node_cpu_us"),
            "rounds": rounds}
    if all("batched" in r for r in rounds):
        batched = {side: [r["batched"][side] for r in rounds] for side in ("traced", "off")}
        by_batch = paired_costs(batched)["traced"]
        done |= {"batched_cost": statistics.median(by_batch), "batched_cost_ci95": median_interval(by_batch),
                 "batched_throughput_rps": _medians(batched, "throughput_rps")}
    return done


def _medians(sides: dict[str, list[dict[str, float]]], measure: str) -> dict[str, float]:
    """Each side's median of ``measure`` over the rounds."""
    return {side: statistics.median(r[measure] for r in done) for side, done in sides.items()}


def start_both(clusters: dict[str, dict[str, NodeProcess]], where: dict[str, tuple[Path, dict[str, str]]],
               concurrency: int) -> None:
    """Start and warm up a pair's clusters at once (~0.45 s a pair less than one after the
    other), each into ``clusters`` as it comes up, so whatever started is stopped by the
    caller even when the other failed; the first failure is raised."""
    def start(side: str) -> None:
        root, env = where[side]
        clusters[side] = start_warm_cluster(root, env, concurrency)

    with ThreadPoolExecutor(len(where)) as pool:
        for started in [pool.submit(start, side) for side in where]:
            started.result()


def measure(rounds: int, records: int, concurrency: int, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """Each of ``modes`` beside the SDK off, ``rounds`` times, modes interleaved (each first in turn)."""
    by_mode: dict[str, list] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="meshfabric-bench-") as tmp, OtlpSink() as sink:
        for i in range(rounds):
            print(f"round {i + 1} of {rounds}: {len(modes)} pairs of clusters, each pair at once",
                  file=sys.stderr, flush=True)
            for mode in modes[i % len(modes):] + modes[:i % len(modes)]:
                where = Path(tmp) / f"round-{i + 1}"
                clusters: dict[str, dict[str, NodeProcess]] = {}
                try:
                    sides = {"off": OFF, "traced": mode_env(mode, sink.endpoint)}
                    start_both(clusters, {side: (where / side, env) for side, env in sides.items()}, concurrency)
                    before = sink.spans
                    done: dict[str, Any] = run_together(clusters, records, concurrency=concurrency, latencies=False)
                    done["batched"] = run_together(clusters, records * BATCHED, concurrency=BATCHES_IN_FLIGHT,
                                                   batch=concurrency)
                    done["sink_spans"] = sink.spans - before
                    by_mode[mode].append(done)
                finally:  # both clusters' nodes at once
                    stop_cluster({f"{side} {name}": node for side, nodes in clusters.items()
                                  for name, node in nodes.items()})
                    shutil.rmtree(where, ignore_errors=True)
        exported = {"spans": sink.spans, "rejected": sink.rejected}
    if exported["rejected"] or not exported["spans"]:
        raise RuntimeError(f"the exporting clusters' spans did not all reach the OTLP sink: {exported}")
    return {"modes": {mode: costs(done) for mode, done in by_mode.items()}, "exported": exported,
            "settings": {"rounds": rounds, "records": records, "concurrency": concurrency,
                         "batched_records": records * BATCHED, "batches_in_flight": BATCHES_IN_FLIGHT}}


def report(results: dict[str, Any]) -> str:
    """The table of costs, one row a mode."""
    settings = results["settings"]
    rows = []
    for mode, done in results["modes"].items():
        batched = ["-", "-"]  # a run saved before batches were measured side by side
        if "batched_cost" in done:
            batched = [versus(done["batched_throughput_rps"]), _cost(done, "batched_cost")]
        rows.append([mode, versus(done["throughput_rps"]), _cost(done, "cost"), versus(done["node_cpu_us"]),
                     _cost(done, "cpu_cost"), *batched])
    batches = (f", then {settings['batched_records']} in batches of {settings['concurrency']}, "
               f"{settings['batches_in_flight']} in flight" if "batched_records" in settings else "")
    heading = (f"tracing's cost, each mode's cluster beside an SDK-off one, both writers at once "
               f"({settings['rounds']} rounds, {settings['records']} records at {settings['concurrency']} in flight "
               f"each{batches}; medians of the rounds, ~95% intervals)")
    return heading + "\n" + table(["mode", "rec/s (vs SDK off)", "cost", "nodes' CPU µs a record (vs off)",
                                   "cost in CPU", "batched rec/s (vs off)", "cost in batched"], rows)


def versus(sides: dict[str, float]) -> str:
    """``traced vs off``, as whole numbers (here and in the suite's summary rows)."""
    return f"{sides['traced']:.0f} vs {sides['off']:.0f}"


def _cost(done: dict[str, Any], figure: str) -> str:
    """``done[figure]`` with its ~95% interval (``figure + "_ci95"``)."""
    low, high = done[f"{figure}_ci95"]
    return f"{done[figure]:.3f} ({low:.3f} to {high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=16, help="pairs of clusters a mode (default 16)")
    parser.add_argument("--records", type=int, default=3000, help="records each writer produces a round")
    parser.add_argument("--concurrency", type=int, default=32, help="records in flight a writer")
    parser.add_argument("--modes", choices=sorted(MODE_SETS), default="all",
                        help="all (default) or suite: all but 1%% of traces recorded (the suite's)")
    parser.add_argument("--report", action="store_true", help="print the last saved run's table and exit")
    args = parser.parse_args()
    if args.report:
        print(report(announced_last_run("side_by_side")))
        return
    if min(args.rounds, args.records, args.concurrency) < 1:
        parser.error("--rounds, --records and --concurrency must be at least 1")
    ensure_isolated("bench.side_by_side")
    results = measure(args.rounds, args.records, args.concurrency, MODE_SETS[args.modes])
    print(report(results))
    print(f"\nresults: {save('side_by_side', results)}")


if __name__ == "__main__":
    main()
