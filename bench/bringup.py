"""Cluster bring-up time: from nothing to ready (every boot trace in, every directory converged).

For 1, 2 and 4 meshes of all five node types (broker, gateway, registry, compute, console)
on each backend this machine offers (local, and netns as root), this starts the cluster the
``fabric`` fixture would, ``--repeat`` times, through the plugin's own ``FabricSession``, and
reports bring-up and teardown times. Nodes are forked from a fork server that has their code
imported (``fabric/forkserver.py``), as the fixture starts them; ``--fresh`` mesh counts are also
brought up with every node a new interpreter (``MESHFABRIC_FORK_SERVER=off``), which spends
~0.25-0.4 s of CPU a node here importing before its boot: on two cores that, not the boots or
the gossip, bounds a bring-up without the fork server. A first bring-up of 1 mesh, before the
measured ones, starts the fork servers (once per process); its time is reported on its own.
Run: ``python -m bench.bringup [--repeat 5] [--meshes 1,2,4] [--backends all] [--fresh 2]``
(re-runs itself under ``unshare -n`` as root, like the tests); ``--backends auto``: only the
backend the ``fabric`` fixture picks by default (netns when possible), as the suite does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import AbstractContextManager
from unittest import mock

from bench.isolation import ensure_isolated
from bench.report import save, table
from fabric import NODE_TYPES, forkserver
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


def fork_server(on: bool) -> AbstractContextManager:
    """Nodes started meanwhile are forked (``on``) or new interpreters (``MESHFABRIC_FORK_SERVER=off``);
    the switch is as it was afterwards."""
    return mock.patch.dict(os.environ, {forkserver.ENV: "auto" if on else "off"})


def measure(backend: str, meshes: int, repeat: int, forked: bool = True) -> dict:
    """Bring a cluster up and down ``repeat`` times on one session (bridge and receiver shared),
    its nodes ``forked`` from the fork server or each a new interpreter."""
    with fork_server(forked):
        return _measure(backend, meshes, repeat) | {"starts": "forked" if forked else "fresh"}


def _measure(backend: str, meshes: int, repeat: int) -> dict:
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
    """``"1,2,4"`` → ``[1, 2, 4]``; ``"none"`` → ``[]`` (argparse turns the ValueError into a usage error)."""
    if text == "none":
        return []
    counts = [int(part) for part in text.split(",")]
    if not counts or min(counts) < 1:
        raise ValueError(text)
    return counts


def first_bring_up(backend: str) -> float:
    """One untimed-by-the-table bring-up of 1 mesh: the process's first starts the fork servers
    (~0.3-0.5 s, once per process, as a test session's first cluster does), which would otherwise
    land in whichever mesh count is measured first. Its time is reported on its own."""
    return statistics.median(measure(backend, 1, 1)["up_s"])


def main(args: argparse.Namespace) -> None:
    runs = []
    first = first_bring_up(args.backends[0])
    print(f"the process's first bring-up (1 mesh, {args.backends[0]}, the fork servers starting): {first:.2f} s",
          flush=True)
    for backend in args.backends:
        for meshes in args.meshes:
            print(f"bringing up {meshes} mesh(es) x {len(NODE_TYPES)} types on {backend}, {args.repeat} times",
                  flush=True)
            runs.append(measure(backend, meshes, args.repeat))
            if meshes in args.fresh:
                print(f"  the same with every node a new interpreter (fork server off), {args.repeat} times", flush=True)
                runs.append(measure(backend, meshes, args.repeat, forked=False))
    rows = [[r["backend"], r["starts"], r["meshes"], r["nodes"], statistics.median(r["up_s"]), min(r["up_s"]),
             max(r["up_s"]), statistics.median(r["down_s"]), r["setup_s"] * 1e3] for r in runs]
    print(f"\ncluster bring-up to ready (boot traces captured, directories converged), {args.repeat} runs each\n")
    print(table(["backend", "nodes started", "meshes", "nodes", "up p50 s", "up min s", "up max s", "down p50 s",
                 "backend+receiver ms"], rows))
    print(f"\nthe process's first bring-up (1 mesh, its fork servers starting, not in the table): {first:.2f} s")
    print(f"\nresults: {save('bringup', {'repeat': args.repeat, 'runs': runs, 'first_up_s': first})}")


if __name__ == "__main__":
    ensure_isolated("bench.bringup")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="bring-ups per backend and mesh count (default 5)")
    parser.add_argument("--meshes", type=mesh_counts, default=[1, 2, 4],
                        help="comma-separated mesh counts to bring up (default 1,2,4)")
    parser.add_argument("--backends", type=backend_names, default="all",
                        help="all (default: local, and netns as root), auto (the fixture's default backend only) "
                             "or local,netns")
    parser.add_argument("--fresh", type=mesh_counts, default=[2],
                        help="mesh counts also brought up with every node a new interpreter, not forked "
                             "(default 2; none: no such run)")
    main(parser.parse_args())
