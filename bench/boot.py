"""The boot chain against a bare iroh endpoint bind, both measured in this run.

Each round binds a bare endpoint, then boots a node in-process (first boot: the identity is
minted; restart: it is loaded) and reads each step's duration from the node's own spans.
``start() returned`` is the wall time of the whole ``Node.start()``: the ready span plus the
control socket, which opens after the node is ready for the mesh and before ``start()``
returns (the CLI prints its ready line then). Run: ``python -m bench.boot``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import iroh

from bench.isolation import ensure_isolated
from bench.report import median_interval, save, summary_ms, table
from fabric import event_loop
from fabric.gc_settings import configure_for_node
from fabric.node import BOOT_STEPS, Node
from fabric.node_config import NodeConfig
from fabric.telemetry import TelemetrySetup

STEPS = ("mesh.node.ready", *BOOT_STEPS)
RETURNED = "start() returned"


async def bare_bind() -> float:
    key = iroh.SecretKey.generate().to_bytes()
    start = time.perf_counter()
    endpoint = await iroh.Endpoint.bind(iroh.EndpointOptions(preset=iroh.preset_minimal(),
                                                             bind_addr="127.0.0.1:0", secret_key=key))
    elapsed = time.perf_counter() - start
    await endpoint.close()
    return elapsed


async def boot(data_dir: Path) -> dict[str, float]:
    node = Node(NodeConfig(mesh="bench", type="broker", data_dir=data_dir),
                telemetry_setup=TelemetrySetup(exporter=None))  # no exporter: measure the node
    start = time.perf_counter()
    await node.start()
    returned = time.perf_counter() - start
    spans = {s.name: (s.end_time - s.start_time) / 1e9 for s in node.telemetry.recent.snapshot()}
    await node.stop(leave=False)
    return {**{step: spans[step] for step in STEPS}, RETURNED: returned}


async def main(rounds: int) -> None:
    binds: list[float] = []
    first: dict[str, list[float]] = {s: [] for s in (*STEPS, RETURNED)}
    again: dict[str, list[float]] = {s: [] for s in (*STEPS, RETURNED)}
    with tempfile.TemporaryDirectory(prefix="meshfabric-bench-boot-") as tmp:
        for i in range(rounds):  # interleaved, so machine noise hits both sides alike
            binds.append(await bare_bind())
            for step, value in (await boot(Path(tmp) / f"n{i}")).items():
                first[step].append(value)
            for step, value in (await boot(Path(tmp) / f"n{i}")).items():
                again[step].append(value)
    bind = summary_ms(binds)
    rows = [["bare iroh endpoint bind", bind["p50_ms"], bind["p99_ms"], 1.0, "-", "-", "-"]]
    results = {"bind": bind, "first_boot": {}, "restart": {}}
    for step in (*STEPS, RETURNED):
        f, r = summary_ms(first[step]), summary_ms(again[step])
        results["first_boot"][step], results["restart"][step] = f, r
        rows.append([step if step in ("mesh.node.ready", RETURNED) else f"  {step}", f["p50_ms"], f["p99_ms"],
                     f["p50_ms"] / bind["p50_ms"], r["p50_ms"], r["p99_ms"], r["p50_ms"] / bind["p50_ms"]])
    # Each round's restart over that round's own bind: how far the ratio moves as the machine does.
    by_round = [ready / bound for ready, bound in zip(again["mesh.node.ready"], binds, strict=True)]
    results["restart_ratio_rounds"] = by_round
    results["restart_ratio_median"] = statistics.median(by_round)
    results["restart_ratio_ci95"] = median_interval(by_round)
    print(f"\nboot chain: {rounds} rounds, each a bare bind, a first boot (identity minted) and a restart "
          "(identity loaded)\n")
    print(table(["step", "first p50 ms", "first p99 ms", "first / bind", "restart p50 ms", "restart p99 ms",
                 "restart / bind"], rows))
    low, high = results["restart_ratio_ci95"]
    print(f"\nrestart / bind, each round against its own bind: median {results['restart_ratio_median']:.2f} "
          f"(~95% interval {low:.2f} to {high:.2f})")
    print(f"\nresults: {save('boot', results)}")


if __name__ == "__main__":
    ensure_isolated("bench.boot")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    configure_for_node()  # as in a node process (``meshfabric node``): the nodes booted here run like one
    event_loop.run(main(parser.parse_args().rounds))  # the nodes' loop, too
