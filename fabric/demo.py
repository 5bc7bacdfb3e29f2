"""``meshfabric up``: a demo cluster of real node processes, torn down on Ctrl-C.

Each mesh gets a broker (started first: the others bootstrap off it), a gateway, a registry
and a compute node (upper-casing topic ``demo`` into ``demo-upper``); mesh1 also gets the
console. mesh1's gateway runs the seed's simulated writer, producing to mesh2's broker. Gateways and the console follow every other
mesh's gossip (``--watch-mesh``), as in the seed's interim cross-mesh design.

When run as root the nodes live in a fresh loopback-only network namespace, so nothing they
send (iroh's UPnP probe included) leaves the machine; the control sockets are files, so
``meshfabric directory --data-dir ...`` works from outside the namespace.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .errors import ConfigError
from .launcher import NodeProcess

MESH_TYPES = ("broker", "gateway", "registry", "compute")
WATCHING_TYPES = ("gateway", "console")


def _writer_role(mesh: str, meshes: list[str]) -> list[str]:
    """mesh1's gateway writes to the next mesh's broker, as in the seed."""
    if mesh != meshes[0] or len(meshes) < 2:
        return []
    return ["--writer-to", f"{meshes[1]}.broker", "--writer-topic", "demo", "--writer-rate", "1"]


DEMO_ROLES = {
    "gateway": _writer_role,
    "registry": lambda mesh, meshes: [],
    "compute": lambda mesh, meshes: ["--compute-from", "demo", "--compute-to", "demo-upper"],
}


class LoopbackNamespace:
    """A named network namespace with only ``lo`` up, removed by ``close()``."""

    def __init__(self, name: str) -> None:
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        try:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            self.close()
            raise

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def _open_namespace(mode: str) -> LoopbackNamespace | None:
    can = os.geteuid() == 0 and shutil.which("ip") is not None
    if mode == "off" or (mode == "auto" and not can):
        if mode == "auto":
            print("note: not root, so nodes run on this host's loopback (iroh sends one UPnP probe "
                  "per node on the LAN); run as root for an isolated namespace", file=sys.stderr)
        return None
    try:
        return LoopbackNamespace(f"meshfabric-up-{os.getpid()}")
    except (subprocess.CalledProcessError, OSError) as exc:
        raise ConfigError(f"cannot create a network namespace (need root and iproute2): {exc}") from None


def run_up(args: argparse.Namespace) -> int:
    if args.meshes < 1:
        raise ConfigError("--meshes must be at least 1")
    meshes = [f"mesh{i}" for i in range(1, args.meshes + 1)]
    own_dir = args.data_dir is None
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="meshfabric-up-"))
    namespace = _open_namespace(args.netns)
    prefix = namespace.prefix if namespace else []
    nodes: list[NodeProcess] = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def launch(mesh: str, type: str, bootstrap: list[str], watch: list[str], extra: list[str] = ()) -> NodeProcess:
        node = NodeProcess(mesh, type, root / f"{mesh}-{type}", bootstrap, watch, prefix=prefix, extra=extra)
        nodes.append(node)
        node.start().wait_ready()
        print(f"  ready  {node.name:<28} {node.address}", flush=True)
        return node

    try:
        print(f"starting {len(meshes)} mesh(es) in {root}" + (f" (netns {namespace.name})" if namespace else ""))
        seeds = {m: launch(m, "broker", [], []).address for m in meshes}
        for mesh in meshes:
            others = [m for m in meshes if m != mesh]
            for type in MESH_TYPES[1:]:
                watch = others if type in WATCHING_TYPES else []
                launch(mesh, type, [seeds[mesh]] + [seeds[m] for m in watch], watch, DEMO_ROLES[type](mesh, meshes))
        launch(meshes[0], "console", list(seeds.values()), meshes[1:])
        print(f"\n{len(nodes)} nodes up. Try:\n  meshfabric directory --data-dir {nodes[-1].data_dir}\n"
              "Ctrl-C stops the cluster.", flush=True)
        while not stop.is_set() and all(n.alive() for n in nodes):
            stop.wait(0.5)
        dead = [n.name for n in nodes if not n.alive()]
        if dead and not stop.is_set():
            print(f"node(s) exited: {', '.join(dead)}; stopping the cluster", file=sys.stderr)
            return 1
        return 0
    finally:
        print("stopping...", flush=True)
        for node in reversed(nodes):
            node.stop()
        if namespace is not None:
            namespace.close()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
