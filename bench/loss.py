"""Failure detection under packet loss: issue 8's "no live node wrongly removed at 10% loss".

One mesh of broker, gateway, registry and compute with the node's default gossip timings
(heartbeat 0.5 s, suspect after 1.5 s, removed after 2.5 s) on the netns backend (the loss is
iptables' ``statistic`` match in the nodes' namespaces, through the plugin's ``Nemesis``),
``--rounds`` times:

* **baseline**: the compute node killed on a clean network: time until every other directory
  dropped it (then restarted, and the cluster converged again);
* **loss**: ``--loss`` of the packets of every link dropped, each direction, for ``--hold``
  seconds: the live nodes suspected and removed meanwhile, from the nodes' own
  ``directory.suspect`` / ``directory.removed`` spans;
* **kill under loss**: the compute node killed with the loss still on: time until every other
  directory dropped it, and whether any live node was removed by then.

Ratio: kill → removed under loss against the same on a clean network, same cluster, same
round. Needs root (network namespaces); otherwise it says so and saves no figures. Run:
``python -m bench.loss [--rounds 2] [--hold 10] [--loss 0.1]`` (re-runs itself under
``unshare -n`` as root, like the tests).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

from bench.isolation import ensure_isolated
from bench.report import save, table
from pytest_meshfabric import Cluster, ClusterSpec, FabricSession, FabricSettings, Nemesis, wait_until
from pytest_meshfabric.backends import netns_unavailable_reason

TYPES = ("broker", "gateway", "registry", "compute")
WAIT = 30.0  # seconds any single wait may take before the benchmark gives up


def kill_until_removed(cluster: Cluster, nemesis: Nemesis, victim_name: str) -> float:
    """SIGKILL the node and return the seconds until no other directory lists it."""
    victim = cluster.node(victim_name)
    others = [n for n in cluster.nodes if n is not victim]
    start = time.perf_counter()
    nemesis.kill(victim)
    wait_until(lambda: all(victim.name not in n.directory_names(alive_only=False) for n in others), WAIT,
               f"every directory to drop {victim.name}")
    return time.perf_counter() - start


def directory_changes(cluster: Cluster, since_ns: int) -> list[tuple[str, int, str]]:
    """``(kind, start_ns, peer.name)`` of every ``directory.suspect`` / ``directory.removed`` span
    the nodes started since ``since_ns``."""
    return [(s.name.removeprefix("directory."), s.start_ns, s.attributes.get("peer.name", "?"))
            for s in cluster.store.all()
            if s.name in ("directory.suspect", "directory.removed") and s.start_ns >= since_ns]


def one_round(cluster: Cluster, nemesis: Nemesis, loss: float, hold_s: float) -> dict[str, Any]:
    victim = cluster["mesh1"]["compute"].name
    clean_s = kill_until_removed(cluster, nemesis, victim)
    cluster.heal()  # restart it (same identity) and wait until every directory is whole again
    lossy_since = time.time_ns()
    for a, b in itertools.combinations(cluster.nodes, 2):
        nemesis.loss((a, b), loss)
    try:
        time.sleep(hold_s)  # the fault's duration is what is measured here, not a wait for an event
        killed_ns = time.time_ns()
        lossy_s = kill_until_removed(cluster, nemesis, victim)
        changes = directory_changes(cluster, lossy_since)
    finally:
        nemesis.heal()
    cluster.heal()
    # Wrong: any node suspected or removed while every node was alive, any other node removed after the kill.
    suspected = [name for kind, at, name in changes if kind == "suspect" and at < killed_ns]
    wrongly = {name for kind, at, name in changes if kind == "removed" and (at < killed_ns or name != victim)}
    return {"clean_removed_s": clean_s, "lossy_removed_s": lossy_s, "live_suspected": len(suspected),
            "live_removed": sorted(wrongly)}


def main(args: argparse.Namespace) -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"bench.loss: skipped, packet loss needs the netns backend: {reason}")
        save("loss", {"skipped": reason})
        return
    session = FabricSession(FabricSettings(backend="netns"), worker="bench")
    rounds = []
    try:
        cluster = session.start_cluster(ClusterSpec(meshes=1, types=TYPES, node_args=()))
        nemesis = Nemesis(cluster)
        try:
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}: kill on a clean network, then {args.loss:.0%} loss on every "
                      f"link for {args.hold:g} s and a kill under it", flush=True)
                rounds.append(one_round(cluster, nemesis, args.loss, args.hold))
        finally:
            try:
                nemesis.close()
            finally:
                session.stop_cluster(cluster)
    finally:
        session.close()
    clean = statistics.median(r["clean_removed_s"] for r in rounds)
    lossy = statistics.median(r["lossy_removed_s"] for r in rounds)
    wrongly = sorted({name for r in rounds for name in r["live_removed"]})
    suspected = sum(r["live_suspected"] for r in rounds)
    print(f"\nfailure detection under {args.loss:.0%} loss: one mesh of {len(TYPES)} nodes, default gossip timings, "
          f"{args.rounds} rounds of {args.hold:g} s\n")
    print(table(["what", "p50 s", "max s", "/ clean"], [
        ["kill -> removed everywhere, clean network", clean, max(r["clean_removed_s"] for r in rounds), 1.0],
        [f"kill -> removed everywhere, {args.loss:.0%} loss", lossy, max(r["lossy_removed_s"] for r in rounds),
         lossy / clean]]))
    print(f"\nlive nodes suspected under loss: {suspected}; live nodes removed: {len(wrongly)} {wrongly or ''}")
    path = save("loss", {"loss": args.loss, "hold_s": args.hold, "nodes": len(TYPES), "rounds": rounds,
                         "clean_removed_p50_s": clean, "lossy_removed_p50_s": lossy, "live_removed": wrongly,
                         "live_suspected": suspected})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    ensure_isolated("bench.loss")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds of loss before the kill (default 10)")
    parser.add_argument("--loss", type=float, default=0.10, help="share of packets dropped on every link (default 0.1)")
    main(parser.parse_args())
