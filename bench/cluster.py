"""Directory convergence after a join, failure detection after a kill or a pause; memory and CPU
per idle node (gossip's heartbeats, pushes and pulls are all an idle node does).

Real node processes with the default gossip timings, in a loopback-only namespace. Baseline:
the configured heartbeat interval and thresholds, from the same run's config. Run:
``python -m bench.cluster``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

from bench.cpu import process_ns
from bench.isolation import ensure_isolated
from bench.report import save, summary_ms, table
from fabric import control
from fabric.gossip.proto import GossipConfig
from fabric.launcher import NodeProcess

TYPES = ("broker", "gateway", "registry", "compute", "console")
IDLE_S = 10.0  # the window idle CPU is measured over (the clock ticks at 10 ms)


def names_seen(node: NodeProcess) -> dict[str, str]:
    entries = control.request_sync(node.control_path, "directory")["entries"]
    return {e["name"]: e["state"] for e in entries}


def time_until(check: Callable[[], bool], timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)
    return time.monotonic() - start


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(rounds: int) -> None:
    config = GossipConfig()
    joins, suspects, removals, pauses = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="meshfabric-bench-cluster-") as tmp:
        root = Path(tmp)
        seed = NodeProcess("m1", "broker", root / "seed").start()
        seed.wait_ready()
        nodes = [seed]
        for i, type in enumerate(TYPES[1:]):
            nodes.append(NodeProcess("m1", type, root / f"n{i}", [seed.address]).start())
        for node in nodes[1:]:
            node.wait_ready()
        everyone = {n.name for n in nodes}
        time_until(lambda: all(set(names_seen(n)) == everyone for n in nodes))
        time.sleep(2.0)  # idle, for the memory reading
        memory = [rss_mb(n.pid) for n in nodes]
        before, start = [process_ns(n.pid) for n in nodes], time.monotonic()
        time.sleep(IDLE_S)  # a measurement window, not a wait for anything
        idle_cpu = [100 * (process_ns(n.pid) - b) / 1e9 / (time.monotonic() - start) for n, b in zip(nodes, before, strict=True)]
        try:
            for r in range(rounds):
                joiner = NodeProcess("m1", "compute", root / f"j{r}", [seed.address]).start()
                joiner.wait_ready()
                joins.append(time_until(lambda: all(joiner.name in names_seen(n) for n in nodes)))
                start = time.monotonic()
                joiner.kill()
                time_until(lambda: all(names_seen(n).get(joiner.name) != "alive" for n in nodes))
                suspects.append(time.monotonic() - start)
                time_until(lambda: all(joiner.name not in names_seen(n) for n in nodes))
                removals.append(time.monotonic() - start)
            for r in range(rounds):
                victim = nodes[1 + r % (len(nodes) - 1)]
                others = [n for n in nodes if n is not victim]
                victim.pause()
                start = time.monotonic()
                try:
                    time_until(lambda: all(names_seen(n).get(victim.name) != "alive" for n in others))
                    pauses.append(time.monotonic() - start)
                finally:
                    victim.resume()
                time_until(lambda: all(names_seen(n).get(victim.name) == "alive" for n in others))
        finally:
            for node in nodes:
                node.stop()
    results = {"config": config.__dict__, "join": summary_ms(joins), "kill_suspect": summary_ms(suspects),
               "kill_removed": summary_ms(removals), "pause_suspect": summary_ms(pauses),
               "rss_mb": {"max": max(memory), "mean": sum(memory) / len(memory)},
               "idle_cpu_pct": {"max": max(idle_cpu), "mean": sum(idle_cpu) / len(idle_cpu), "window_s": IDLE_S}}
    rows = [
        ["join visible in every directory", results["join"]["p50_ms"], results["join"]["p99_ms"], "-"],
        ["kill -> suspect everywhere", results["kill_suspect"]["p50_ms"], results["kill_suspect"]["p99_ms"],
         config.suspect_after * 1e3],
        ["kill -> removed everywhere", results["kill_removed"]["p50_ms"], results["kill_removed"]["p99_ms"],
         config.remove_after * 1e3],
        ["pause -> suspect everywhere", results["pause_suspect"]["p50_ms"], results["pause_suspect"]["p99_ms"],
         config.suspect_after * 1e3],
    ]
    print(f"\ncluster: one mesh of {len(TYPES)} nodes, default gossip (heartbeat {config.heartbeat_interval}s), "
          f"{rounds} rounds each\n")
    print(table(["what", "p50 ms", "p99 ms", "configured ms"], rows))
    print(f"\nmemory per idle node: max {max(memory):.1f} MB RSS, mean {sum(memory) / len(memory):.1f} MB")
    print(f"CPU per idle node over {IDLE_S:g} s: mean {results['idle_cpu_pct']['mean']:.2f}% of a core, "
          f"max {results['idle_cpu_pct']['max']:.2f}%")
    print(f"\nresults: {save('cluster', results)}")


if __name__ == "__main__":
    ensure_isolated("bench.cluster")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    main(parser.parse_args().rounds)
