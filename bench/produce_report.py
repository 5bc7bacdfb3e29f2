"""``bench.produce``'s tables, printed from its results (the dict it saves as JSON)."""

from __future__ import annotations

import statistics
from typing import Any

from bench import cpu
from bench.report import table


def print_report(results: dict[str, Any]) -> None:
    """The paths' latencies and throughputs against the baselines, the p50 by round, tracing's
    costs, where a produce's time goes and the CPU a round trip, by thread."""
    settings = results.get("settings", {"records": "?", "concurrency": "?"})  # older runs did not save them
    records, concurrency = settings["records"], settings["concurrency"]
    base = results["baseline"]
    rtt, fs, local = base["raw_rtt"], base["fsync"], base["raw_rtt_in_process"]
    rhythm_rtt, rhythm_fs = base["raw_rtt_in_rhythm"], base["fsync_in_rhythm"]
    grown, both, raw_rps, rounds = base["grown_file_commit_in_rhythm"], base["raw_rtt_with_fsync"], \
        base["raw_throughput_mps"], base["rounds"]
    floor_ms, back_to_back_ms = base["floor_p50_ms"], base["floor_back_to_back_p50_ms"]
    ratios = results["p50_ratio_rounds"]
    segments = list(results["breakdown"]["segments_us"].items())
    traced = results["breakdown"]["traces"]
    cpu_per_op, exported = results["cpu_per_op_us"], results["exported"]
    rows = [["raw iroh round trip (64 B, open stream, 2 processes), back to back", "-", rtt["p50_ms"], rtt["p99_ms"],
             "-", raw_rps, 1.0],
            ["  the same, both ends in one process (reference)", "-", local["p50_ms"], local["p99_ms"], "-", "-", "-"],
            ["  the same, each after a commit (in a produce's rhythm)", "-", rhythm_rtt["p50_ms"],
             rhythm_rtt["p99_ms"], "-", "-", "-"],
            ["fsync of a 100 B append, back to back", "-", fs["p50_ms"], fs["p99_ms"], "-", "-", "-"],
            ["  the same, each after a round trip (in a produce's rhythm)", "-", rhythm_fs["p50_ms"],
             rhythm_fs["p99_ms"], "-", "-", "-"],
            ["  100 B into a grown file + fdatasync (the broker's commit), in rhythm", "-",
             grown["p50_ms"], grown["p99_ms"], "-", "-", "-"],
            ["raw round trip, server fsyncs a 100 B append first (composite)", "-", both["p50_ms"],
             both["p99_ms"], both["p50_ms"] / floor_ms, "-", "-"],
            [f"raw round trip, each side busy {base['pace_us']} µs before it sends (less the server's)", "-",
             base["raw_rtt_paced"]["p50_ms"], base["raw_rtt_paced"]["p99_ms"],
             "-", "-", "-"]]
    for tracing, runs in results["runs"].items():
        for label, r in runs.items():
            rows.append([label, tracing, r["p50_ms"], r["p99_ms"], r["p50_ms"] / floor_ms,
                         r["throughput_rps"], r["throughput_rps"] / raw_rps])
    print(f"\nproduce: {records} sequential records per path, then {records} with "
          f"{concurrency} in flight; the writer on the gateway and the baselines in {rounds} interleaved "
          f"rounds; floor = raw round trip + fsync, each in a produce's rhythm = {floor_ms:.3f} ms (back to back: "
          f"{back_to_back_ms:.3f} ms); raw stream throughput = "
          f"{concurrency} x 100 B messages per write, echoed\n")
    print(table(["path", "tracing", "p50 ms", "p99 ms", "p50 / floor", "records/s", "/ raw stream"], rows))
    print("\nthe writer's p50 / floor, each round against its own floor (median, ~95% interval): " + "; ".join(
        f"{mode} {statistics.median(r):.2f} ({lo:.2f} to {hi:.2f})"
        for mode, r in ratios.items() for lo, hi in [results["p50_ratio_ci95"][mode]]))
    if results["tracing_cost"]:  # not with --modes on-off (the suite measures it side by side)
        print(f"\ncost of tracing by mode, the median of {rounds} rounds' pairs with the SDK off (~95% interval): "
              "in the writer's throughput, and in the CPU the gateway and the broker spent a record during it; "
              "beside it, this process's (the OTLP sink, where the mode exports; with the SDK off "
              f"{results['sink_cpu_us']['off']:.1f} µs); and in the writer's throughput in batches, one trace a batch\n")
        print(table(["tracing", "throughput cost", "node CPU a record µs", "CPU cost (1 - off / mode)", "sink CPU µs",
                     f"batched throughput cost (batches of {concurrency})"],
                    [[mode, f"{results['tracing_cost'][mode]:.3f} ({lo:.2f} to {hi:.2f})",
                      results["node_cpu_us"][mode], f"{results['tracing_cpu_cost'][mode]:.3f} ({clo:.2f} to {chi:.2f})",
                      results["sink_cpu_us"][mode], f"{results['tracing_cost_batched'][mode]:.3f} ({blo:.2f} to {bhi:.2f})"]
                     for mode in results["tracing_cost"]
                     for (lo, hi), (clo, chi), (blo, bhi) in [(results["tracing_cost_ci95"][mode],
                                                                results["tracing_cpu_cost_ci95"][mode],
                                                                results["tracing_cost_batched_ci95"][mode])]]))
    if segments:
        print(f"\nwhere a cross-mesh produce's time goes (tracing on, writer on the gateway; p50 over "
              f"{traced} sequential produces, from the two nodes' spans; raw one-way ~ {rtt['p50_ms'] / 2 * 1e3:.0f} µs "
              f"(~ {base['raw_rtt_paced']['p50_ms'] / 2 * 1e3:.0f} µs paced), "
              f"fsync {fs['p50_ms'] * 1e3:.0f} µs, {rhythm_fs['p50_ms'] * 1e3:.0f} in rhythm, the broker's commit "
              f"{grown['p50_ms'] * 1e3:.0f} in rhythm)\n")
        print(table(["segment", "p50 µs"], segments))
    waits = [f"{group} {cpu.WAITED}" for group in cpu.NAMED]
    print(f"\nCPU per sequential round trip or produce (tracing on), by thread, µs ({records} each; "
          "the threads' schedstat; the total from the process's CPU clock, other threads its rest); and how long "
          "the event loop and iroh's runtime were ready to run but waited for a core\n")
    print(table(["process", *cpu.GROUPS, "total", *waits],
                [[label, *(round(spent.get(g, float("nan")), 1) for g in (*cpu.GROUPS, "total", *waits))]
                 for label, spent in cpu_per_op.items()]))
    print(f"\nexported to the OTLP sink: {exported['spans']} spans in {exported['requests']} requests "
          f"({exported['rejected']} rejected)")
