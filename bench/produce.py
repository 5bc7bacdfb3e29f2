"""Produce latency and throughput, same-mesh and cross-mesh, tracing on and off.

Baselines measured in the same run (``bench/raw_echo.py``): a raw iroh round trip (64 B on an
open stream, between two processes like every produce here; the same with both ends in one
process for reference), an ``fsync`` of a small append, and raw stream throughput. The target's floor is the sum of
the first two, each timed alone but measured in the rhythm of sequential produces: one round
trip, then one fsync, and again (``RawEcho.in_rhythm``). Back to back, an fsync costs ~0.5-0.9x
what it costs a round trip after the last one (the disk's side: a commit after a gap, spent
asleep or spinning, is slower; no produce's commit comes right after another's), and a round
trip right after another is cheaper than one after a commit; the floor with both parts back to
back is shown for context. The broker's log commits more cheaply than the floor's fsync (it
writes into zeros its file was grown by, then ``fdatasync``: the size does not change), so that
commit is measured too, in the same rhythm, and the floor with it in the fsync's place is shown
for context. Each round also has its own floor (its round trips' p50 plus its fsyncs' p50): each mode's p50
over it, round by round, gives the pooled ratio a median and a ~95% interval, i.e. how far it
moves as the shared machine changes speed.
Beside them, the same round trip with the echo server
appending 100 B to a file and fsyncing it before each echo (the composite: what a produce with
no code of ours between the transport and the disk would take, wake-ups included); and the
same round trip with each side busy for ``PACE_US`` before it sends (less the server's part):
a produce does Python work between the transport's events, during which iroh's runtime threads
fall asleep and must be woken, which a back-to-back echo never pays. Run:
``python -m bench.produce`` (``--report`` prints the last saved run's tables again).

Tracing modes, each a cluster of its own (a new one for every round, alone on the machine while
it is measured), measured in interleaved rounds: every span recorded
(kept in the nodes' rings only), 1% of traces sampled, spans exported over OTLP/HTTP to a sink
(every span or 1% of traces; every span through the SDK's export thread too, for comparison), every
span recorded with the spans' C part off (``MESHFABRIC_SPAN_CORE=python``), and the SDK off: the
baseline of tracing's cost. A second cluster with the SDK off is measured the same
way: its difference from the first is the measurement's own noise in that run. ``--modes
targets`` leaves out the three modes that only show what the C parts and the loop export save
(``DIAGNOSTIC``) and the two 1% modes, which the suite measures side by side
(``bench/side_by_side.py``: each beside an SDK-off cluster at the same moment, where a run's
rounds agree ~3-4x more closely than here). ``--modes on-off`` (what ``python -m bench`` runs)
measures only every span recorded and the SDK off: the produce's latency and throughput against
the floor, traced and not, with no tracing cost computed here (the suite measures all of
tracing's costs side by side): half the clusters of ``targets``, ~1 minute less.

Last, the CPU of each thread (``bench/cpu.py``) per raw round trip, on both sides of the echo,
and per sequential produce, on the gateway and the broker: where the time over the floor is
spent, and by which thread (the event loop, iroh's runtime).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

from bench import cpu
from bench.breakdown import breakdown
from bench.isolation import ensure_isolated
from bench.otlp_sink import OtlpSink
from bench.produce_costs import p50_ratios, paired_costs, paired_cpu_costs
from bench.produce_report import print_report
from bench.raw_echo import (
    PACE_US,
    WARMUP,
    Commits,
    RawEcho,
    fsyncs,
    in_process_round_trips,
)
from bench.report import announced_last_run, median_interval, save, summary_ms
from fabric import control, event_loop
from fabric.client import FabricClient
from fabric.launcher import NodeProcess

# Every span recorded; 1% of traces recorded (head sampling, the standard OTel variables);
# the SDK off. Unsampled spans still propagate context, so sampled traces stay whole.
TRACING = {
    "on": {},
    "sampled 1%": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "off": {"OTEL_SDK_DISABLED": "true"},
}
# Spans exported over OTLP/HTTP (to a sink: ``bench/otlp_sink.py``): every span, 1% of traces,
# every span through the SDK's batch processor and its thread instead of the node's loop
# (``fabric/otlp_loop.py``), and every span encoded without the encoder's C part
# (``fabric/_span_wire.c``).
EXPORTED = {
    "exported": {},
    "exported, 1% sampled": TRACING["sampled 1%"],
    "exported, SDK thread": {"MESHFABRIC_OTLP_EXPORT": "thread"},
    "exported, Python encoder": {"MESHFABRIC_OTLP_ENCODER": "python"},
}


# A second cluster with the SDK off, measured like the others: its "cost" against the first is
# what the measurement itself varies by between two identical clusters in the same rounds.
SAME_AS_OFF = "off, second cluster"
# Every span recorded, started and ended in Python only (without ``fabric/_span_core.c``): what
# the C part saves, in the same rounds.
SPANS_IN_PYTHON = "on, spans in Python"


# What the fabric's own C parts and loop export save, each against the mode it replaces: context
# for its developers, not a target's figure (``--modes targets`` leaves them out).
DIAGNOSTIC = ("exported, SDK thread", "exported, Python encoder", SPANS_IN_PYTHON)
# The 1% modes: the suite measures them side by side instead (``--modes targets`` leaves them out).
SIDE_BY_SIDE = ("sampled 1%", "exported, 1% sampled")


# The modes of ``--modes on-off``: the produce against its floor, traced and not.
ON_OFF = ("on", "off")
MODE_SETS = ("all", "targets", "on-off")


def tracing_modes(endpoint: str, which: str = "all") -> dict[str, dict[str, str]]:
    """The modes of set ``which`` (one of ``MODE_SETS``), each with its nodes' environment
    (exports go to ``endpoint``): every mode; ``targets``, only those the tracing targets and
    the A/A control need here (every span recorded or exported, the SDK off and its twin);
    ``on-off``, every span recorded and the SDK off."""
    if which not in MODE_SETS:
        raise ValueError(f"unknown set of tracing modes {which!r}: expected one of {', '.join(MODE_SETS)}")
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    modes = {**TRACING, **{mode: {**exporting, **env} for mode, env in EXPORTED.items()},
             SPANS_IN_PYTHON: {"MESHFABRIC_SPAN_CORE": "python"}, SAME_AS_OFF: TRACING["off"]}
    if which == "on-off":
        return {mode: modes[mode] for mode in ON_OFF}
    return {mode: env for mode, env in modes.items() if which == "all" or mode not in DIAGNOSTIC + SIDE_BY_SIDE}


FAST = ["--heartbeat", "0.3", "--suspect-after", "1.0", "--remove-after", "2.0"]


def start_cluster(root: Path, env: dict[str, str]) -> dict[str, NodeProcess]:
    """Two brokers (mesh1, mesh2) and mesh1's gateway watching mesh2, ready and converged; a
    cluster that fails to come up is stopped before the error is raised."""
    started: list[NodeProcess] = []

    def node(mesh: str, type: str, bootstrap=(), watch=()) -> NodeProcess:
        proc = NodeProcess(mesh, type, root / f"{mesh}-{type}", bootstrap, watch, env=env, extra=FAST)
        started.append(proc)
        return proc.start()

    try:
        b1, b2 = node("mesh1", "broker"), node("mesh2", "broker")
        for n in (b1, b2):
            n.wait_ready()
        gw = node("mesh1", "gateway", [b1.address, b2.address], ["mesh2"])
        gw.wait_ready()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            names = {e["name"] for e in control.request_sync(gw.control_path, "directory")["entries"]}
            if {b1.name, b2.name} <= names:
                break
            time.sleep(0.05)
    except BaseException:
        for proc in started:
            proc.stop()
        raise
    return {"b1": b1, "b2": b2, "gw": gw}


def start_warm_cluster(root: Path, env: dict[str, str], concurrency: int) -> dict[str, NodeProcess]:
    """``start_cluster``, then warmed up (the writer's path: connections, code, the broker's
    log file grown); stopped again if the warm-up fails."""
    nodes = start_cluster(root, env)
    try:
        writer_run(nodes, WARMUP, concurrency)
    except BaseException:
        stop_cluster(nodes)
        raise
    return nodes


def stop_cluster(nodes: dict[str, NodeProcess]) -> None:
    """Stop every node of a cluster, side by side (a node exports what it still holds as it stops);
    none is fine (a pair whose clusters both failed to start)."""
    with ThreadPoolExecutor(max(1, len(nodes))) as pool:
        list(pool.map(NodeProcess.stop, nodes.values()))


async def _gated_produce(client: FabricClient, gate: asyncio.Semaphore, target: str) -> None:
    async with gate:
        await client.produce("bench", b"v" * 100, to=target)


async def measure(nodes: dict[str, NodeProcess], records: int, concurrency: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    paths = {"direct to broker": (nodes["b1"].address, nodes["b1"].name),
             "same-mesh via gateway": (nodes["gw"].address, nodes["b1"].name),
             "cross-mesh via gateway": (nodes["gw"].address, nodes["b2"].name)}
    for label, (via, target) in paths.items():
        async with await FabricClient.connect(via) as client:
            for _ in range(WARMUP):  # warm up connections and code paths
                await client.produce("warmup", b"w", to=target)
            samples = []
            for _ in range(records):
                start = time.perf_counter()
                await client.produce("bench", b"v" * 100, to=target)
                samples.append(time.perf_counter() - start)
            gate = asyncio.Semaphore(concurrency)
            start = time.perf_counter()
            await asyncio.gather(*(_gated_produce(client, gate, target) for _ in range(records)))
            throughput = records / (time.perf_counter() - start)
        out[label] = {**summary_ms(samples), "throughput_rps": throughput}
    return out


BREAKDOWN_CHUNK = 50  # produces between two reads of the rings: 3 gateway spans each, well within 256


def gateway_writes(nodes: dict[str, NodeProcess], count: int, **options: Any) -> dict[str, Any]:
    """The gateway's own writer producing ``count`` records of 100 B to mesh2's broker
    (``produce_many``; ``options``: ``concurrency``, ``latencies``, ``batch``): its answer."""
    return control.request_sync(nodes["gw"].control_path, "produce_many", timeout=120, to=nodes["b2"].name,
                                topic="bench", count=count, size=100, **options)


def traced_breakdown(nodes: dict[str, NodeProcess], records: int) -> tuple[list[tuple[str, float]], int]:
    """Sequential produces by the gateway's writer (tracing on), then where their time went,
    from both nodes' recent spans: read after every chunk of produces (a node keeps its last
    256 spans), and only spans that started with the chunk (not the earlier concurrent runs')."""
    spans: list[dict[str, Any]] = []
    for done in range(0, records, BREAKDOWN_CHUNK):
        started = time.time_ns()  # the nodes' span clock: same machine, same wall clock
        gateway_writes(nodes, min(BREAKDOWN_CHUNK, records - done), concurrency=1, latencies=False)
        spans += [s for n in ("gw", "b2") for s in control.request_sync(nodes[n].control_path, "spans")["spans"]
                  if s["start_ns"] >= started]
    return breakdown(spans, "bench")


def produce_cpu(nodes: dict[str, NodeProcess], records: int) -> dict[str, dict[str, float]]:
    """CPU per produce of the gateway and the broker, by thread (``bench/cpu.py``), over
    ``records`` produced one at a time by the gateway's writer."""
    pids = {"gateway (writer)": nodes["gw"].pid, "broker": nodes["b2"].pid}
    before = cpu.reading(pids)
    gateway_writes(nodes, records, concurrency=1, latencies=False)
    return cpu.per_op(before, cpu.reading(pids), records)


def writer_run(nodes: dict[str, NodeProcess], records: int, concurrency: int, batched: bool = False) -> dict[str, Any]:
    """The seed's writer: the gateway itself produces across meshes (one hop), timed in-process:
    ``records`` one at a time (latencies), then ``10 * records``, ``concurrency`` at a time
    (throughput: long enough to outlast a noisy neighbour's burst; and the CPU the gateway and
    the broker spent a record meanwhile, and this process, which holds the OTLP sink: the
    collector's share of the same two cores); or, with ``batched``, ``80 * records`` in batches
    of ``concurrency`` (~0.6 s here, as long as the run one record a produce: its tracing
    cost, paired by round, is as noisy as that one's, not twice)."""
    if batched:
        return gateway_writes(nodes, records * 80, concurrency=4, batch=concurrency)
    latencies = gateway_writes(nodes, records, concurrency=concurrency)["latencies_s"]
    pids = {"gw": nodes["gw"].pid, "b2": nodes["b2"].pid, "sink": os.getpid()}
    before = cpu.reading(pids)
    throughput = gateway_writes(nodes, records * 10, concurrency=concurrency, latencies=False)["throughput_rps"]
    spent = cpu.per_op(before, cpu.reading(pids), records * 10)
    return {"latencies_s": latencies, "throughput_rps": throughput,
            "node_cpu_us": spent["gw"]["total"] + spent["b2"]["total"], "sink_cpu_us": spent["sink"]["total"]}


async def main(args: argparse.Namespace) -> None:
    """The baselines and the writer figures are measured in ``rounds`` interleaved rounds
    (baselines, then each mode, each going first in turn), so a noisy machine hits all of them
    alike: latencies pooled, throughputs the median round. Every mode runs on a new cluster of
    its own in every round, started for it and stopped after it, alone on the machine:

    * new every round: two clusters of the same code differ by a few percent in CPU a record
      for as long as they run (their processes' layout in memory, their connections), which one
      cluster per mode for the whole run would pass off as that mode's cost;
    * alone: the other modes' clusters, idle beside it, would gossip on the same two cores
      (24 nodes heartbeating), load a user's single cluster does not have."""
    with tempfile.TemporaryDirectory(prefix="meshfabric-bench-") as tmp, OtlpSink() as sink:
        root = Path(tmp)
        running: dict[str, NodeProcess] = {}  # the cluster under measurement, stopped on any way out
        rtts: list[float] = []  # back to back
        fsync_samples: list[float] = []
        rhythm_rtts: list[float] = []  # each followed by a commit, as a produce's round trip is
        rhythm_fsyncs: list[float] = []
        grown_samples: list[float] = []  # the broker's commit, in the same rhythm
        composite: list[float] = []
        paced: list[float] = []
        raw: list[float] = []
        floors: list[float] = []  # each round's own floor (s): its round trips' p50 + its fsyncs' p50, in rhythm
        modes = tracing_modes(sink.endpoint, args.modes)
        names = list(modes)
        rounds: dict[str, list[dict[str, Any]]] = {t: [] for t in names}
        results: dict = {"runs": {t: {} for t in names}}
        cpu_per_op: dict[str, dict[str, float]] = {}
        segments: list[tuple[str, float]] = []
        traced = 0
        try:
            async with (RawEcho() as echo, RawEcho(fsync_to=root / "composite.bin") as echo_fsync,
                        RawEcho(pace_s=PACE_US / 1e6) as echo_paced):
                for i in range(args.rounds):
                    print(f"round {i + 1} of {args.rounds}: {len(modes)} clusters, one at a time",
                          file=sys.stderr, flush=True)
                    rtts += await echo.round_trips(args.records)
                    fsync_samples += fsyncs(root, args.records)
                    with (Commits(root / "rhythm.bin", args.records) as appends,
                          Commits(root / "grown.bin", args.records, grown=True) as grown):
                        round_rtts, round_fsyncs = await echo.in_rhythm(appends, args.records)
                        grown_samples += (await echo.in_rhythm(grown, args.records))[1]
                    floors.append(statistics.median(round_rtts) + statistics.median(round_fsyncs))
                    rhythm_rtts += round_rtts
                    rhythm_fsyncs += round_fsyncs
                    composite += await echo_fsync.round_trips(args.records)
                    paced += await echo_paced.round_trips(args.records)
                    raw.append(await echo.throughput(args.records * 80, args.concurrency))  # as many as the batched run
                    for tracing in names[i % len(names):] + names[:i % len(names)]:  # each goes first in turn
                        where = root / f"round-{i + 1}" / tracing.replace(" ", "_")
                        running = start_warm_cluster(where, modes[tracing], args.concurrency)
                        if i == 0 and tracing in TRACING:  # every path for these; the writer's alone for the rest
                            with mock.patch.dict(os.environ, modes[tracing]):  # the client traces like the nodes
                                results["runs"][tracing] = await measure(running, args.records, args.concurrency)
                        run = writer_run(running, args.records, args.concurrency)
                        run["batched_rps"] = writer_run(running, args.records, args.concurrency,
                                                        batched=True)["throughput_rps"]
                        rounds[tracing].append(run)
                        if i == args.rounds - 1 and tracing == "on":
                            cpu_per_op |= produce_cpu(running, args.records)
                            segments, traced = traced_breakdown(running, args.records)
                        stop_cluster(running)
                        running = {}
                        shutil.rmtree(where, ignore_errors=True)
                echo_pids = {"raw echo: client": os.getpid(), "raw echo: server": echo.server.pid}
                before = cpu.reading(echo_pids)
                await echo.round_trips(args.records)
                cpu_per_op = cpu.per_op(before, cpu.reading(echo_pids), args.records) | cpu_per_op
        finally:
            if running:
                stop_cluster(running)
    exported = {"requests": sink.requests, "spans": sink.spans, "rejected": sink.rejected}
    exporting = any("OTEL_EXPORTER_OTLP_ENDPOINT" in env for env in modes.values())
    if exported["rejected"] or (exporting and not exported["spans"]):
        raise RuntimeError(f"the exporting nodes' spans did not all reach the OTLP sink: {exported}")
    local_samples = await in_process_round_trips(args.records)
    rtt, fs, raw_rps = summary_ms(rtts), summary_ms(fsync_samples), statistics.median(raw)
    rhythm_rtt, rhythm_fs, grown = summary_ms(rhythm_rtts), summary_ms(rhythm_fsyncs), summary_ms(grown_samples)
    both = summary_ms(composite)
    floor_ms = rhythm_rtt["p50_ms"] + rhythm_fs["p50_ms"]
    back_to_back_ms = rtt["p50_ms"] + fs["p50_ms"]
    results["breakdown"] = {"traces": traced, "segments_us": dict(segments)}
    results["cpu_per_op_us"] = cpu_per_op
    results["baseline"] = {"raw_rtt": rtt, "raw_rtt_in_process": summary_ms(local_samples), "fsync": fs,
                           "floor_back_to_back_p50_ms": back_to_back_ms,
                           "raw_rtt_in_rhythm": rhythm_rtt, "fsync_in_rhythm": rhythm_fs,
                           "grown_file_commit_in_rhythm": grown,
                           "floor_p50_ms": floor_ms, "raw_rtt_with_fsync": both,
                           "raw_rtt_paced": summary_ms(paced), "pace_us": PACE_US,
                           "raw_throughput_mps": raw_rps, "rounds": args.rounds}
    for tracing, done in rounds.items():
        runs = results["runs"][tracing]
        runs["cross-mesh, writer on gateway"] = {
            **summary_ms([x for r in done for x in r["latencies_s"]]),
            "throughput_rps": statistics.median(r["throughput_rps"] for r in done),
            "throughput_rounds": [r["throughput_rps"] for r in done]}
        runs[f"cross-mesh, writer on gateway, batches of {args.concurrency}"] = {
            "p50_ms": float("nan"), "p99_ms": float("nan"),
            "throughput_rps": statistics.median(r["batched_rps"] for r in done)}
    ratios = p50_ratios(rounds, floors)
    results["p50_ratio_rounds"] = ratios
    results["p50_ratio_ci95"] = {mode: median_interval(r) for mode, r in ratios.items()}
    # Tracing's cost from these rounds (each mode against the SDK off of its round), unless only
    # the two modes the floor's figures need ran (``on-off``: the suite measures it side by side).
    costed = {} if args.modes == "on-off" else rounds
    costs = paired_costs(costed)
    results["tracing_cost"] = {mode: statistics.median(c) for mode, c in costs.items()}
    results["tracing_cost_ci95"] = {mode: median_interval(c) for mode, c in costs.items()}
    # The same in batched throughput: a batch is one produce, one trace, for all its records.
    batched_costs = paired_costs(costed, "batched_rps")
    results["tracing_cost_batched"] = {mode: statistics.median(c) for mode, c in batched_costs.items()}
    results["tracing_cost_batched_ci95"] = {mode: median_interval(c) for mode, c in batched_costs.items()}
    cpu_costs = paired_cpu_costs(costed)
    results["node_cpu_us"] = {mode: statistics.median(r["node_cpu_us"] for r in done) for mode, done in rounds.items()}
    results["sink_cpu_us"] = {mode: statistics.median(r["sink_cpu_us"] for r in done) for mode, done in rounds.items()}
    results["tracing_cpu_cost"] = {mode: statistics.median(c) for mode, c in cpu_costs.items()}
    results["tracing_cpu_cost_ci95"] = {mode: median_interval(c) for mode, c in cpu_costs.items()}
    results["exported"] = exported
    results["settings"] = {"records": args.records, "concurrency": args.concurrency}
    print_report(results)
    print(f"\nresults: {save('produce', results)}")


def print_last_report() -> None:
    """The last saved run's tables again, without running anything."""
    print_report(announced_last_run("produce"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=12,
                        help="interleaved rounds of baselines and writer runs (tracing's cost: the median of the "
                             "rounds' paired ratios)")
    parser.add_argument("--modes", choices=MODE_SETS, default="all",
                        help="all tracing modes (default); 'targets': only those the tracing targets and the A/A "
                             "control need here (leaves out what the C parts and the loop export save, and the 1%% "
                             "modes the suite measures side by side: 5 clusters a round fewer); 'on-off': every "
                             "span recorded and the SDK off, no tracing cost (what the suite runs: it measures "
                             "tracing's cost side by side)")
    parser.add_argument("--report", action="store_true", help="print the tables of the last saved run and exit")
    arguments = parser.parse_args()
    if arguments.report:
        print_last_report()
    else:
        ensure_isolated("bench.produce")
        event_loop.run(main(arguments))
