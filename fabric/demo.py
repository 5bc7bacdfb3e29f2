"""``meshfabric up``: a demo cluster of real node processes, torn down on Ctrl-C.

Each mesh gets a broker (started first: the others bootstrap off it), a gateway, a registry
and a compute node (upper-casing topic ``demo`` into ``demo-upper``); mesh1 also gets the
console. mesh1's gateway runs the seed's simulated writer, producing to mesh2's broker. With
``--cross-mesh backbone`` (the default) the console and the gateways join the backbone (the
console first, the gateways through it); with ``--cross-mesh watch`` they follow every other
mesh's gossip (``--watch-mesh``), as in the seed's interim cross-mesh design.

When run as root the nodes live in a fresh loopback-only network namespace, so nothing they
send (iroh's UPnP probe included) leaves the machine; the control sockets are files, so
``meshfabric directory --data-dir ...`` works from outside the namespace.

Every other node exports its spans to the console (``OTEL_EXPORTER_OTLP_ENDPOINT``), which
starts right after the brokers, on a port fixed in advance (spans exported before it listens
are retried by the exporter), takes its own spans in-process, and is stopped last. Inside a namespace the console also serves on its Unix socket, and
``up`` forwards ``127.0.0.1:--console-port`` on the host to it, so the printed URL works
from the host's browser.
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
from .portforward import PortForward
from .services.console.service import SOCKET_NAME

MESH_TYPES = ("broker", "gateway", "registry", "compute")
WATCHING_TYPES = ("gateway", "console")
CONSOLE_PORT_IN_NAMESPACE = 4318  # the standard OTLP/HTTP port: nothing else listens in a fresh namespace


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
    if not 0 <= args.console_port <= 65535:
        raise ConfigError(f"--console-port {args.console_port} is not a TCP port: use 1-65535 (or 0, any free port)")
    own_dir = args.data_dir is None
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="meshfabric-up-"))
    namespace = _open_namespace(args.netns)
    prefix = namespace.prefix if namespace else []
    nodes: list[NodeProcess] = []
    forward: PortForward | None = None
    console_port = CONSOLE_PORT_IN_NAMESPACE if namespace else args.console_port
    console_dir = root / f"{meshes[0]}-console"
    endpoint = f"http://127.0.0.1:{console_port}"
    otlp_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def launch(mesh: str, type: str, bootstrap: list[str], watch: list[str], extra: list[str] = ()) -> NodeProcess:
        # The console takes its own spans in-process: exporting them to itself would only make
        # its last flush, after its server has closed, wait on retries.
        env = None if type == "console" else otlp_env
        node = NodeProcess(mesh, type, root / f"{mesh}-{type}", bootstrap, watch, env=env, prefix=prefix,
                           extra=extra)
        nodes.append(node)
        node.start().wait_ready()
        print(f"  ready  {node.name:<28} {node.address}", flush=True)
        return node

    try:
        if namespace:  # bound first, so a busy port fails before any node starts
            forward = PortForward(console_dir / SOCKET_NAME, "127.0.0.1", args.console_port).start()
        elif console_port == 0:
            raise ConfigError("without a network namespace the nodes must know the console's port before it "
                              "starts: pass --console-port PORT (not 0)")
        print(f"starting {len(meshes)} mesh(es) in {root}" + (f" (netns {namespace.name})" if namespace else ""))
        seeds = {m: launch(m, "broker", [], []).address for m in meshes}
        backbone = args.cross_mesh == "backbone"
        mode = ["--cross-mesh", args.cross_mesh]
        console_watch = [] if backbone else meshes[1:]
        console = launch(meshes[0], "console", [seeds[m] for m in [meshes[0], *console_watch]], console_watch,
                         ["--console-port", str(console_port), *mode])
        for mesh in meshes:
            others = [m for m in meshes if m != mesh]
            for type in MESH_TYPES[1:]:
                watch = others if type in WATCHING_TYPES and not backbone else []
                peer = ["--backbone-peer", console.address] if backbone and type == "gateway" else []
                launch(mesh, type, [seeds[mesh]] + [seeds[m] for m in watch], watch,
                       [*DEMO_ROLES[type](mesh, meshes), *mode, *peer])
        url = forward.url if forward else console.info["console"]
        print(f"\n{len(nodes)} nodes up.\n  console:  {url}\n"
              f"  try:      meshfabric directory --data-dir {console.data_dir}\n"
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
        if forward is not None:
            forward.close()
        # The console goes last, so it still receives everyone's final spans.
        for node in sorted(reversed(nodes), key=lambda n: n.type == "console"):
            node.stop()
        if namespace is not None:
            namespace.close()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
