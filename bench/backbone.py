"""Cross-mesh awareness, both designs: subscribe-all (``--watch-mesh``) against the backbone.

1. The simulator (``fabric/gossip/crossmesh_sim.py``) runs M = 2, 4, ... 256 meshes of 10 nodes
   (2 gateways each) and reports the cross-mesh messages and bytes (sent + received) per
   gateway per second in steady state, and how long a join in one mesh takes to be visible
   at a gateway of another. The plot of traffic against M goes to ``results/backbone.png``.
   It also cuts the backbone in two and heals it (``crossmesh_sim.partition_heal``): how long
   until each side removed the other side's gateways, and until all of them see each other
   and every mesh's current summary again after the heal.
2. Real processes (``--real-meshes`` meshes of a broker and a gateway, in a loopback-only
   namespace) measure the same counters from the gateways' ``status``, beside the simulator
   run on the same topology; the ratio should stay within ``MARGIN``.

Run: ``python -m bench.backbone`` (needs ``pip install -e .[bench]`` for the plot).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from bench.isolation import ensure_isolated
from bench.report import RESULTS, save, table
from fabric import control
from fabric.gossip import crossmesh_sim
from fabric.launcher import NodeProcess

MARGIN = 0.25  # real / simulated, per-gateway messages and bytes per second: within ±25 %
MODES = ("watch", "backbone")
PARTITION_MESHES = (2, 4, 8, 16)


# -- the simulator ---------------------------------------------------------------------------


def simulate(max_meshes: int, nodes: int = 10, gateways: int = 2) -> list[crossmesh_sim.CrossMeshResult]:
    results = []
    m = 2
    while m <= max_meshes:
        window = 10.0 if m <= 64 else 4.0  # fewer virtual seconds for the biggest worlds
        for mode in MODES:
            result = crossmesh_sim.run(mode, m, nodes=nodes, gateways=gateways, window=window, trials=3, seed=m)
            print(f"  sim {mode:8} M={m:3}: {result.bytes_per_gateway_s:10.0f} B/s per gateway "
                  f"({result.wall_s:.1f} s)", flush=True)
            results.append(result)
        m *= 2
    return results


def plot(results: list[crossmesh_sim.CrossMeshResult], path: Path) -> Path:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bytes, ax_msgs) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, style in (("watch", "o-"), ("backbone", "s-")):
        rows = [r for r in results if r.mode == mode]
        label = "subscribe-all (--watch-mesh)" if mode == "watch" else "backbone"
        ax_bytes.plot([r.meshes for r in rows], [r.bytes_per_gateway_s for r in rows], style, label=label)
        ax_msgs.plot([r.meshes for r in rows], [r.msgs_per_gateway_s for r in rows], style, label=label)
    for ax, what in ((ax_bytes, "bytes"), (ax_msgs, "messages")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("meshes M (10 nodes, 2 gateways each)")
        ax.set_ylabel(f"cross-mesh {what} per gateway per second")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Cross-mesh awareness: per-gateway traffic against the number of meshes (simulated)")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


# -- real processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class RealRun:
    mode: str
    meshes: int
    window_s: float
    msgs_per_gateway_s: float
    bytes_per_gateway_s: float


def cross_mesh_counters(status: dict[str, Any]) -> tuple[int, int]:
    """Frames and bytes (in + out) of a node's cross-mesh gossip: the backbone, or the meshes
    it watches."""
    frames = size = 0
    for mesh, stats in status["gossip"].items():
        if mesh != status["mesh"]:
            frames += stats.get("wire_frames_in", 0) + stats.get("wire_frames_out", 0)
            size += stats.get("wire_bytes_in", 0) + stats.get("wire_bytes_out", 0)
    return frames, size


def _converged(mode: str, gateways: list[NodeProcess], everyone: set[str], meshes: int) -> bool:
    for gw in gateways:
        if mode == "watch":
            names = {e["name"] for e in control.request_sync(gw.control_path, "directory")["entries"]}
            if names != everyone:
                return False
        else:
            seen = control.request_sync(gw.control_path, "backbone")["meshes"]
            if len(seen) != meshes or any((m["summary"] or {}).get("counts") != {"broker": 1, "gateway": 1}
                                          for m in seen):
                return False
    return True


Starter = Callable[[str, str, list[str], list[str], list[str]], NodeProcess]
"""``start(mesh, type, bootstrap, watch, extra_args)``: a ready node process."""


def measure_real(mode: str, meshes: int, start: Starter, window: float = 8.0, settle: float = 3.0) -> RealRun:
    """Start ``meshes`` meshes of a broker and a gateway (default gossip timings) and measure
    the gateways' cross-mesh traffic over ``window`` seconds of steady state. The caller stops
    the nodes."""
    names = [f"mesh{i}" for i in range(1, meshes + 1)]
    brokers = {m: start(m, "broker", [], [], ["--cross-mesh", mode]) for m in names}
    gateways: list[NodeProcess] = []
    for mesh in names:
        others = [m for m in names if m != mesh] if mode == "watch" else []
        peers = ["--backbone-peer", gateways[0].address] if mode == "backbone" and gateways else []
        gateways.append(start(mesh, "gateway", [brokers[m].address for m in [mesh, *others]], others,
                              ["--cross-mesh", mode, *peers]))
    everyone = {n.name for n in [*brokers.values(), *gateways]}
    deadline = time.monotonic() + 30
    while not _converged(mode, gateways, everyone, meshes):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mode}: the {meshes} meshes did not converge in 30 s")
        time.sleep(0.1)
    time.sleep(settle)  # the measuring window is steady state: it starts after the joins' rumors
    before = [cross_mesh_counters(control.request_sync(g.control_path, "status")) for g in gateways]
    started = time.monotonic()
    time.sleep(window)
    after = [cross_mesh_counters(control.request_sync(g.control_path, "status")) for g in gateways]
    elapsed = time.monotonic() - started
    frames = sum(a[0] - b[0] for a, b in zip(after, before)) / len(gateways) / elapsed
    size = sum(a[1] - b[1] for a, b in zip(after, before)) / len(gateways) / elapsed
    return RealRun(mode, meshes, elapsed, frames, size)


def run_real(mode: str, meshes: int, root: Path, window: float = 8.0) -> RealRun:
    """``measure_real`` on node processes of its own, stopped afterwards."""
    nodes: list[NodeProcess] = []

    def start(mesh: str, type: str, bootstrap: list[str], watch: list[str], extra: list[str]) -> NodeProcess:
        node = NodeProcess(mesh, type, root / f"{mode}-{mesh}-{type}", bootstrap, watch, extra=extra)
        nodes.append(node)
        node.start().wait_ready(timeout=20)
        return node

    try:
        return measure_real(mode, meshes, start, window)
    finally:
        for node in reversed(nodes):
            node.stop()


def simulate_like_real(mode: str, meshes: int, window: float) -> crossmesh_sim.CrossMeshResult:
    """The simulator on the real runs' topology: a broker and a gateway per mesh, all watching."""
    return crossmesh_sim.run(mode, meshes, nodes=2, gateways=1, window=window, trials=1, watching=meshes)


def compare(real: RealRun, sim: crossmesh_sim.CrossMeshResult) -> dict[str, float]:
    return {"msgs_ratio": real.msgs_per_gateway_s / sim.msgs_per_gateway_s,
            "bytes_ratio": real.bytes_per_gateway_s / sim.bytes_per_gateway_s}


# -- the report ------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    print(f"simulating M = 2 .. {args.max_meshes} meshes of 10 nodes, 2 gateways each")
    results = simulate(args.max_meshes)
    rows = [[r.meshes, r.mode, r.msgs_per_gateway_s, r.bytes_per_gateway_s, r.visible_s, r.visible_max_s,
             r.window_s, r.wall_s] for r in results]
    out: dict[str, Any] = {"sim": [r.as_dict() for r in results]}
    print("\ncross-mesh traffic per gateway (sent + received), and time for a join to be seen in another mesh\n")
    print(table(["M", "design", "msgs/s", "bytes/s", "join seen (mean s)", "(max s)", "window s", "wall s"], rows))
    print(f"\nplot: {plot(results, args.plot)}")
    print("\nbackbone partition (half the meshes cut from the rest, 10 nodes and 2 gateways each) and heal\n")
    heals = [crossmesh_sim.partition_heal(m, nodes=10, gateways=2, trials=3) for m in PARTITION_MESHES]
    print(table(["M", "detected mean s", "(max s)", "re-converged mean s", "(max s)"],
                [[h.meshes, h.detect_mean_s, h.detect_max_s, h.reconverge_mean_s, h.reconverge_max_s] for h in heals]))
    out["partition_heal"] = [asdict(h) for h in heals]

    if args.real_meshes:
        comparisons = []
        with tempfile.TemporaryDirectory(prefix="meshfabric-bench-") as tmp:
            for mode in MODES:
                real = run_real(mode, args.real_meshes, Path(tmp), window=args.window)
                sim = simulate_like_real(mode, args.real_meshes, args.window)
                comparisons.append((real, sim, compare(real, sim)))
        print(f"\nreal processes ({args.real_meshes} meshes of a broker and a gateway) against the simulator "
              f"on the same topology; margin ±{MARGIN:.0%}\n")
        print(table(["design", "real msgs/s", "sim msgs/s", "ratio", "real bytes/s", "sim bytes/s", "ratio"],
                    [[r.mode, r.msgs_per_gateway_s, s.msgs_per_gateway_s, c["msgs_ratio"], r.bytes_per_gateway_s,
                      s.bytes_per_gateway_s, c["bytes_ratio"]] for r, s, c in comparisons]))
        out["real"] = [{"real": asdict(r), "sim": s.as_dict(), **c} for r, s, c in comparisons]
    print(f"\nresults: {save('backbone', out)}")


if __name__ == "__main__":
    ensure_isolated("bench.backbone")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-meshes", type=int, default=256, help="largest M simulated (powers of 2 from 2)")
    parser.add_argument("--real-meshes", type=int, default=4, help="meshes of real processes (0: none)")
    parser.add_argument("--window", type=float, default=8.0, help="seconds of steady state measured on real nodes")
    parser.add_argument("--plot", type=Path, default=RESULTS / "backbone.png")
    main(parser.parse_args())
