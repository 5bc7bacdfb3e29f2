"""Cluster bring-up time: from nothing to ready (every boot trace in, every directory converged).

For 1, 2 and 4 meshes of all five node types (broker, gateway, registry, compute, console)
on each backend this machine offers (local, and netns as root), this starts the cluster the
``fabric`` fixture would, ``--repeat`` times, through the plugin's own ``FabricSession``, and
reports bring-up and teardown times. Bring-up is bound by the CPU the node processes spend
starting (mostly importing: ~0.2-0.3 s each here), so it grows with the node count on two cores.
Run: ``python -m bench.bringup [--repeat 5] [--meshes 1,2,4] [--backends all]`` (re-runs itself
under ``unshare -n`` as root, like the tests); ``--backends auto``: only the backend the ``fabric``
fixture picks by default (netns when possible), as the suite does.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.isolation import ensure_isolated
from bench.report import save, table
from fabric import NODE_TYPES
from pytest_meshfabric import ClusterSpec, FabricSession, FabricSettings
from pytest_meshfabric.backends import netns_unavailable_reason, resolve_backend_name


def backends() -> list[str]:
    """The backends that can run here."""
    return ["local"] + (["netns"] if netns_unavailable_reason() is None else [])


def backend_names(text: str) -> list[str]:
    """``"all"`` → every backend that can run here; ``"auto"`` → the fixture's default one;
    else the comma-separated names (``local``, ``netns``; argparse turns the ValueError into a usage error)."""
    if text == "all":
        return backends()
    if text == "auto":
        return [resolve_backend_name("auto")[0]]
    names = text.split(",")
    if not names or not set(names) <= {"local", "netns"}:
        raise ValueError(text)
    return names


def measure(backend: str, meshes: int, repeat: int) -> dict:
    """Bring a cluster up and down ``repeat`` times on one session (bridge and receiver shared)."""
    session = FabricSession(FabricSettings(backend=backend), worker="bench")
    up, down, nodes = [], [], 0
    try:
        opened = time.perf_counter()
        session.receiver  # noqa: B018 - open the backend (bridge) and the receiver, timed apart
        setup = time.perf_counter() - opened
        for _ in range(repeat):
            start = time.perf_counter()
            cluster = session.start_cluster(ClusterSpec(meshes=meshes, types=NODE_TYPES))
            up.append(time.perf_counter() - start)
            nodes = len(cluster.nodes)
            start = time.perf_counter()
            session.stop_cluster(cluster)
            down.append(time.perf_counter() - start)
    finally:
        session.close()
    return {"backend": backend, "meshes": meshes, "nodes": nodes, "setup_s": setup, "up_s": up, "down_s": down}


def mesh_counts(text: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]`` (argparse turns the ValueError into a usage error)."""
    counts = [int(part) for part in text.split(",")]
    if not counts or min(counts) < 1:
        raise ValueError(text)
    return counts


def main(args: argparse.Namespace) -> None:
    runs = []
    for backend in args.backends:
        for meshes in args.meshes:
            print(f"bringing up {meshes} mesh(es) x {len(NODE_TYPES)} types on {backend}, {args.repeat} times",
                  flush=True)
            runs.append(measure(backend, meshes, args.repeat))
    rows = [[r["backend"], r["meshes"], r["nodes"], statistics.median(r["up_s"]), min(r["up_s"]), max(r["up_s"]),
             statistics.median(r["down_s"]), r["setup_s"] * 1e3] for r in runs]
    print(f"\ncluster bring-up to ready (boot traces captured, directories converged), {args.repeat} runs each\n")
    print(table(["backend", "meshes", "nodes", "up p50 s", "up min s", "up max s", "down p50 s", "backend+receiver ms"],
                rows))
    print(f"\nresults: {save('bringup', {'repeat': args.repeat, 'runs': runs})}")


if __name__ == "__main__":
    ensure_isolated("bench.bringup")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="bring-ups per backend and mesh count (default 5)")
    parser.add_argument("--meshes", type=mesh_counts, default=[1, 2, 4],
                        help="comma-separated mesh counts to bring up (default 1,2,4)")
    parser.add_argument("--backends", type=backend_names, default="all",
                        help="all (default: local, and netns as root), auto (the fixture's default backend only) "
                             "or local,netns")
    main(parser.parse_args())
