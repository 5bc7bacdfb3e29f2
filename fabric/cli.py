"""The ``meshfabric`` command.

    meshfabric node --mesh M --type T [--data-dir D] [--bootstrap ID@ADDR ...] [--watch-mesh M2 ...]
    meshfabric up --meshes N            a demo cluster of real processes and its console, until Ctrl-C
    meshfabric directory --data-dir D   the directory as that node sees it
    meshfabric status --data-dir D      who a node is and its counters
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from . import control
from .errors import ConfigError, FabricError, IdentityError
from .gossip.proto import GossipConfig
from .identity import NODE_TYPES

EXIT_CONFIG = 2
EXIT_BOOT = 1


def _default_data_dir(mesh: str | None, type: str | None) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "meshfabric" / f"{mesh}-{type}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshfabric", description="A small, observable multi-mesh node fabric on iroh.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="run one node in the foreground")
    node.add_argument("--mesh", default=os.environ.get("MESHFABRIC_MESH"),
                      help="mesh label (required; or MESHFABRIC_MESH)")
    node.add_argument("--type", default=os.environ.get("MESHFABRIC_TYPE"),
                      help=f"node type: {', '.join(NODE_TYPES)} (or MESHFABRIC_TYPE)")
    node.add_argument("--data-dir", type=Path, help="state directory (default ~/.local/state/meshfabric/<mesh>-<type>)")
    node.add_argument("--identity", type=Path, help="secret key file (default <data-dir>/identity.key)")
    node.add_argument("--bind", default="127.0.0.1:0", help="UDP address to bind (default 127.0.0.1:0)")
    node.add_argument("--bootstrap", action="append",
                      default=os.environ.get("MESHFABRIC_BOOTSTRAP", "").split(),
                      metavar="ID@ADDR", help="a peer to join through (repeatable; or MESHFABRIC_BOOTSTRAP)")
    node.add_argument("--watch-mesh", action="append", default=[], metavar="MESH",
                      help="also follow this mesh's gossip (repeatable)")
    node.add_argument("--cross-mesh", choices=["backbone", "watch"], default="backbone",
                      help="how other meshes are known: gateways and consoles join the backbone "
                           "(default), or only the --watch-mesh meshes are followed (the old design)")
    node.add_argument("--backbone-peer", action="append", default=[], metavar="ID@ADDR",
                      help="a backbone member (gateway or console) to join the backbone through (repeatable)")
    defaults = GossipConfig()
    node.add_argument("--heartbeat", type=float, default=defaults.heartbeat_interval, help="seconds between heartbeats")
    node.add_argument("--suspect-after", type=float, default=defaults.suspect_after, help="silence before suspect (s)")
    node.add_argument("--remove-after", type=float, default=defaults.remove_after, help="silence before removal (s)")
    broker = node.add_argument_group("broker")
    broker.add_argument("--max-record-bytes", type=int, default=1024 * 1024, help="largest accepted record")
    broker.add_argument("--no-auto-create", dest="auto_create", action="store_false",
                        help="refuse produces to topics that do not exist yet")
    broker.add_argument("--topic", dest="topics", action="append", default=[], help="create this topic at start")
    gateway = node.add_argument_group("gateway")
    gateway.add_argument("--writer-to", metavar="TARGET", help="run the simulated writer, producing to TARGET (e.g. mesh2.broker)")
    gateway.add_argument("--writer-topic", default="demo")
    gateway.add_argument("--writer-rate", type=float, default=2.0, help="records per second")
    compute = node.add_argument_group("compute")
    compute.add_argument("--compute-from", metavar="TOPIC", help="consume this topic")
    compute.add_argument("--compute-to", metavar="TOPIC", help="produce transformed records here")
    compute.add_argument("--transform", default="upper", help="upper, reverse or identity")
    console = node.add_argument_group("console")
    console.add_argument("--console-host", default="127.0.0.1", help="web console address (default 127.0.0.1)")
    console.add_argument("--console-port", type=int, default=0, help="web console port (default 0: any free port)")
    console.add_argument("--otlp-forward", metavar="URL", help="also forward received spans to this OTLP/HTTP endpoint")
    console.add_argument("--console-token", default=os.environ.get("MESHFABRIC_CONSOLE_TOKEN"),
                         help="enable cluster-changing actions for requests bearing this token "
                              "(or MESHFABRIC_CONSOLE_TOKEN; default: read-only)")
    node.add_argument("-v", "--verbose", action="store_true")

    up = sub.add_parser("up", help="start a demo cluster of real node processes until Ctrl-C")
    up.add_argument("--meshes", type=int, default=2, help="number of meshes (default 2)")
    up.add_argument("--data-dir", type=Path, help="where nodes keep state (default: a temp dir, removed at exit)")
    up.add_argument("--cross-mesh", choices=["backbone", "watch"], default="backbone",
                    help="cross-mesh design: the backbone (default) or gateways watching every mesh")
    up.add_argument("--netns", choices=["auto", "on", "off"], default="auto",
                    help="run the nodes in a loopback-only network namespace (auto: when root)")
    up.add_argument("--console-port", type=int, default=8080,
                    help="host port of the web console (default 8080; 0 = any free port, with a namespace)")

    produce = sub.add_parser("produce", help="produce one record through a node")
    _add_via(produce)
    produce.add_argument("--to", help="target broker: a name, <mesh>.<type> or id prefix (default: ask a registry)")
    produce.add_argument("--topic", required=True)
    produce.add_argument("--value", required=True)
    produce.add_argument("--key")
    fetch = sub.add_parser("fetch", help="fetch records through a node")
    _add_via(fetch)
    fetch.add_argument("--from", dest="from_", help="broker to fetch from (default: ask a registry)")
    fetch.add_argument("--topic", required=True)
    fetch.add_argument("--offset", type=int, default=0)
    fetch.add_argument("--max-records", type=int, default=100)

    for name, text in (("directory", "print the directory as a node sees it"),
                       ("status", "print a node's identity and counters")):
        p = sub.add_parser(name, help=text)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--data-dir", type=Path, help="the node's data directory")
        where.add_argument("--control", type=Path, help="the node's control socket")
        p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _add_via(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", required=True, metavar="NODE",
                        help="the node to go through: its data directory (uses its control socket, works "
                             "across network namespaces) or its address <id>@<ip:port> (uses iroh)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "node":
            return run_node(args)
        if args.command == "up":
            from .demo import run_up
            return run_up(args)
        if args.command in ("produce", "fetch"):
            return run_client(args)
        return run_query(args)
    except ConfigError as exc:
        print(f"meshfabric: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except FabricError as exc:
        print(f"meshfabric: {exc}", file=sys.stderr)
        return EXIT_BOOT


def run_node(args: argparse.Namespace) -> int:
    from . import event_loop, spans
    from .gc_settings import configure_for_node
    from .node import Node
    from .node_config import NodeConfig

    configure_for_node()
    spans.check_span_path()

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = NodeConfig(
        mesh=args.mesh, type=args.type,
        data_dir=args.data_dir or _default_data_dir(args.mesh, args.type),
        identity_path=args.identity, bind=args.bind, bootstrap=args.bootstrap, watch=args.watch_mesh,
        cross_mesh=args.cross_mesh, backbone_peers=args.backbone_peer,
        gossip=GossipConfig(heartbeat_interval=args.heartbeat, suspect_after=args.suspect_after,
                            remove_after=args.remove_after),
        max_record_bytes=args.max_record_bytes, auto_create_topics=args.auto_create, topics=args.topics,
        writer_to=args.writer_to, writer_topic=args.writer_topic, writer_rate=args.writer_rate,
        compute_from=args.compute_from, compute_to=args.compute_to, transform=args.transform,
        console_host=args.console_host, console_port=args.console_port, otlp_forward=args.otlp_forward,
        console_token=args.console_token,
    )
    try:
        return event_loop.run(_serve(Node(config)), prefer_uvloop=args.type != "console")
    except IdentityError as exc:
        print(f"meshfabric: cannot boot: {exc}", file=sys.stderr)
        return EXIT_BOOT


async def _serve(node) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    ready = {"event": "ready", "name": node.name, "node_id": node.node_id, "address": node.address,
             "control": str(node.config.control_path), "pid": os.getpid(), **node.service_info()}
    print(json.dumps(ready), flush=True)
    await stop.wait()
    logging.getLogger("fabric").info("stopping %s: announcing leave", node.name)
    await node.stop(leave=True)
    return 0


def run_client(args: argparse.Namespace) -> int:
    if "@" in args.via:
        reply = asyncio.run(_client_call(args))
    elif args.command == "produce":
        reply = control.request_sync(control.socket_path(args.via), "produce", topic=args.topic,
                                     value=args.value, to=args.to, key=args.key)
    else:
        reply = control.request_sync(control.socket_path(args.via), "fetch", topic=args.topic,
                                     offset=args.offset, max_records=args.max_records, **{"from": args.from_})
    reply.pop("ok", None)
    if args.json:
        print(json.dumps(reply, indent=2, default=lambda b: b.decode("utf-8", "backslashreplace")))
    elif args.command == "produce":
        print(f"ack: {reply['topic']}@{reply['offset']} on {reply['broker']}"
              + (" (duplicate)" if reply.get("duplicate") else ""))
    else:
        for r in reply["records"]:
            value = r["value"].decode("utf-8", "backslashreplace") if isinstance(r["value"], bytes) else r["value"]
            print(f"{reply['topic']}@{r['offset']}: {value}")
        print(f"({len(reply['records'])} records from {reply['broker']}, end offset {reply['end_offset']})")
    return 0


async def _client_call(args: argparse.Namespace) -> dict:
    from .client import FabricClient

    async with await FabricClient.connect(args.via) as client:
        if args.command == "produce":
            return await client.produce(args.topic, args.value, to=args.to, key=args.key)
        return await client.fetch(args.topic, offset=args.offset, max_records=args.max_records, from_=args.from_)


def run_query(args: argparse.Namespace) -> int:
    path = args.control or control.socket_path(args.data_dir)
    reply = control.request_sync(path, args.command)
    if args.json:
        print(json.dumps(reply, indent=2))
    elif args.command == "directory":
        print(format_directory(reply))
    else:
        print("\n".join(f"{k}: {v}" for k, v in reply.items() if k != "ok"))
    return 0


def format_directory(reply: dict) -> str:
    """The directory as a table, as the console's Cache tab shows it."""
    rows = [("NAME", "MESH", "TYPE", "LOCATION", "ID", "STATE", "LAST HEARD")]
    for e in reply["entries"]:
        rows.append((e["name"], e["mesh"], e["type"], ",".join(e["addrs"]), e["id_prefix"],
                     e["state"], f"{e['last_heard_s']:.1f}s ago"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"directory of {reply['name']} ({len(rows) - 1} nodes)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
