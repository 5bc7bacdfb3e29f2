"""A fabric node: the boot chain, its lifecycle and what it exposes.

``Node.start()`` is the boot, and every boot is one trace::

    mesh.node.ready
    ├── identity_loaded      load or mint the secret key
    ├── endpoint_created     bind the iroh endpoint (it accepts the node's ALPNs from the start)
    ├── alpn_registered      route the ALPNs of gossip and the services to their handlers
    ├── gossip_started       the mesh topic's (and watched ones') gossip, its ticker started
    └── accept_loop_started  serve incoming connections; start the services' background work

"Ready" is ready for the mesh: when the root ends, peers can reach the node at its address,
every ALPN has its handler, and the gossip's ticker and the accept loop are started as tasks.
Both first run on the loop's next turn, the ticker first: its first tick (the join) puts the
node's first signed digest into its own directory and sends it to the bootstrap peers, so the
node announces an address it already serves, before it handles anything it accepts (the
endpoint holds what arrives until then). Like iroh-gossip's ``subscribe``, starting the
gossip does not wait for the join's messages to go out. Identity and endpoint are
recorded after the bind (the telemetry needs the name), with the times measured around them;
all the rest of the telemetry (``TelemetrySetup``: the environment's settings, the exporter) is
set up when the ``Node`` is made, as a program sets up OpenTelemetry before what it traces.
The control socket (the local operator's door, not the mesh's) opens right after the root,
before ``start()`` returns: the CLI prints its ready line after ``start()``, so whoever waits
for that line can use the control socket at once.

A step that fails ends its span with error status, the root too, and the error propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import control, event_loop, known_peers, spans
from .address import format_peer
from .backbone import BACKBONE_TYPES, Backbone
from .directory import Change, ChangeKind, Directory
from .gossip import digest as digests
from .gossip.net import ALPN as GOSSIP_ALPN
from .gossip.net import GossipNet
from .gossip.proto import GossipCore
from .errors import TransportError
from .identity import Identity, load_or_mint, node_name, verify_signature
from .node_config import NodeConfig
from .telemetry import NodeLabels, Telemetry, TelemetrySetup
from .services.base import Service
from .services.broker import BrokerService
from .services.compute import ComputeService
from .services.console import ConsoleService
from .services.frontdoor import FrontDoor
from .services.gateway import GatewayService
from .services.registry import RegistryService
from .transport import Transport

log = logging.getLogger(__name__)

SERVICES: dict[str, tuple[type[Service], ...]] = {
    "broker": (BrokerService,),
    "gateway": (GatewayService,),
    "registry": (RegistryService,),
    "compute": (ComputeService,),
    "console": (ConsoleService,),
}
"""The services each node type runs, besides the front door every node has."""

BOOT_STEPS = ("identity_loaded", "endpoint_created", "alpn_registered", "gossip_started", "accept_loop_started")


def node_alpns(node_type: str) -> list[bytes]:
    """The ALPNs a node of ``node_type`` serves, from the classes: the endpoint accepts them
    from its bind on (a separate ``set_alpns`` call costs ~60 µs of a boot)."""
    return sorted({GOSSIP_ALPN, *(cls.alpn for cls in (FrontDoor, *SERVICES[node_type]) if cls.alpn)})


def _read_small(path: Path) -> bytes:
    """A small file's bytes, ``b""`` if it is missing (one open, one read)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        return os.read(fd, 64)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _outside_the_boot_trace():
    """Start background work here: a task copies the current context, and what it does later
    (a heartbeat's news, a produce, a control request) must start traces of its own."""
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


class Node:
    """One running node. Create, ``await start()``, and ``await stop()`` when done."""

    def __init__(self, config: NodeConfig,
                 telemetry_setup: TelemetrySetup | None = None) -> None:
        self.config = config
        # Everything of the telemetry but the node's name, from the environment now (a bad
        # exporter setting is a ConfigError here), not cold inside the boot.
        self.telemetry_setup = telemetry_setup if telemetry_setup is not None else TelemetrySetup.from_env()
        self.identity: Identity | None = None
        self.telemetry: Telemetry | None = None
        self.transport: Transport | None = None
        self.gossip: GossipNet | None = None
        self.directory: Directory | None = None
        self.backbone: Backbone | None = None  # gateways and consoles in backbone mode
        self.known_peers: known_peers.KnownPeers | None = None
        self._hinted = 0  # peers of the last run pulled at boot (known_peers.py)
        self.control: control.ControlServer | None = None
        self.frontdoor: FrontDoor | None = None
        self.services: list[Service] = []
        self.incarnation = time.time_ns() // 1_000_000
        self.started_at: float | None = None
        self.clock = time.monotonic

    # -- identity --------------------------------------------------------------

    @property
    def node_id(self) -> str:
        assert self.identity is not None, "node has not loaded its identity yet"
        return self.identity.node_id

    @property
    def name(self) -> str:
        return node_name(self.config.mesh, self.config.type, self.node_id)

    @property
    def address(self) -> str:
        """``<id>@<addrs>``: what other nodes pass as ``--bootstrap``."""
        assert self.transport is not None
        return format_peer(self.node_id, self.transport.addrs)

    # -- boot ------------------------------------------------------------------

    async def start(self) -> None:
        """Boot: one trace rooted at ``mesh.node.ready``, a child span per step; the endpoint
        is bound as soon as the key is read (all the bind needs)."""
        cfg = self.config
        boot_start = time.time_ns()
        try:
            self.identity = load_or_mint(cfg.identity_path)  # type: ignore[arg-type]
        except Exception as exc:
            self._record_failed_boot(boot_start, boot_start, exc)
            raise
        identity_done = time.time_ns()
        # The bind needs only the key; its id is read from the endpoint (``Identity.adopt``),
        # cheaper than deriving it. Making the telemetry during the bind saves nothing: the
        # bind's work runs on this thread, inside the bindings' polls.
        try:
            self.transport = await self._bind()
        except Exception as exc:
            self._record_failed_boot(boot_start, identity_done, exc)
            raise
        bound = time.time_ns()
        try:
            self.telemetry = Telemetry(NodeLabels(self.name, cfg.mesh, cfg.type, self.node_id),
                                       setup=self.telemetry_setup)
        except BaseException:
            self.telemetry_setup.shutdown()
            await self.transport.close()
            raise
        self.telemetry.attach(asyncio.get_running_loop())
        tracer = self.telemetry.tracer
        root = tracer.start_span("mesh.node.ready", start_time=boot_start)
        with trace.use_span(root, end_on_exit=True):
            tracer.start_span("identity_loaded", start_time=boot_start,
                              attributes={"identity.path": str(cfg.identity_path)}).end(end_time=identity_done)
            tracer.start_span("endpoint_created", start_time=identity_done,
                              attributes={"net.addresses": self.transport.addrs}).end(end_time=bound)
            with tracer.start_as_current_span("alpn_registered") as span:
                self._start_gossip_state()
                self._create_services()
                span.set_attribute("alpns", [a.decode() for a in self.transport.apply_alpns()])
            with tracer.start_as_current_span("gossip_started") as span:
                with _outside_the_boot_trace():
                    self.gossip.start()  # type: ignore[union-attr]
                span.set_attribute("gossip.meshes", [cfg.mesh, *cfg.watch])
                span.set_attribute("gossip.backbone", self.backbone is not None)
                span.set_attribute("gossip.bootstrap_peers", len(cfg.bootstrap_peers))
                span.set_attribute("gossip.known_peers", self._hinted)
            with tracer.start_as_current_span("accept_loop_started"), _outside_the_boot_trace():
                self.transport.start_accepting()
                for service in self.services:
                    await service.start()
            root.set_attribute("node.address", self.address)
        # Ready for the mesh. The control socket is the local operator's door, not the mesh's:
        # it opens now, before ``start`` returns (so before the ready line), outside the ready
        # span (its file-system bind costs ~0.05-0.5 ms when other processes fsync).
        with _outside_the_boot_trace():
            await self._open_control()
        self.started_at = time.monotonic()
        log.info("ready: %s at %s", self.name, self.address)

    async def _open_control(self) -> None:
        """Listen on the control socket; a failure is a span of its own (the boot trace has
        ended ready) and propagates like any boot error."""
        self.control = control.ControlServer(self.config.control_path, control.node_operations(self))
        try:
            await self.control.start()
        except Exception as exc:
            with self.telemetry.tracer.start_as_current_span("control_socket_failed") as span:  # type: ignore[union-attr]
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"control socket {self.config.control_path}: {exc}"))
            raise

    async def _bind(self) -> Transport:
        """Bind the endpoint; with an ephemeral port, reuse the one this data dir had before.

        A restarted node then comes back at the address its peers (and their bootstrap
        flags) know; if that port is taken now, any free port will do.
        """
        cfg = self.config
        port_file = cfg.data_dir / "port"
        host, _, port = cfg.bind.rpartition(":")
        alpns = node_alpns(cfg.type)
        if port == "0" and (saved := _read_small(port_file)):
            try:
                return await Transport.bind(self.identity, f"{host}:{int(saved)}", alpns=alpns)  # type: ignore[arg-type]
            except (TransportError, ValueError):
                log.info("the previous port is not free: binding another")
        transport = await Transport.bind(self.identity, cfg.bind, alpns=alpns)  # type: ignore[arg-type]
        if port == "0":
            bound = transport.endpoint.bound_sockets()[0].rpartition(":")[2]
            port_file.parent.mkdir(parents=True, exist_ok=True)
            port_file.write_text(bound)
        return transport

    def _start_gossip_state(self) -> None:
        cfg, gcfg = self.config, self.config.gossip
        self.directory = Directory(self.node_id, gcfg.suspect_after, gcfg.remove_after)
        self.directory.subscribe(self._on_change)
        rng = random.Random(int.from_bytes(os.urandom(16), "big"))  # not Random(): ~2.5 kB of urandom
        member = GossipCore(cfg.mesh, self.node_id, self.directory, verify_signature, gcfg,
                            own_digest=self._own_digest, rng=rng, bootstrap=list(cfg.bootstrap_peers),
                            hints=known_peers.load(cfg.data_dir, cfg.mesh))
        self._hinted = len(member.hints)
        self.known_peers = known_peers.KnownPeers(cfg.data_dir, cfg.mesh, self.directory)
        watchers = [GossipCore(m, self.node_id, self.directory, verify_signature, gcfg, rng=rng,
                               bootstrap=list(cfg.bootstrap_peers)) for m in cfg.watch]
        cores: list = [member, *watchers]
        if cfg.cross_mesh == "backbone" and cfg.type in BACKBONE_TYPES:
            self.backbone = Backbone.create(self, verify_signature, rng)
            cores.append(self.backbone.core)
        self.gossip = GossipNet(self.transport, cores)  # type: ignore[arg-type]

    def _create_services(self) -> None:
        self.frontdoor = FrontDoor(self)
        self.services = [self.frontdoor] + [cls(self) for cls in SERVICES[self.config.type]]
        for service in self.services:
            if service.alpn:
                self.transport.register(service.alpn, service.handle)  # type: ignore[union-attr]

    def _own_digest(self, heartbeat: int, leaving: bool) -> digests.SignedDigest:
        meta: dict[str, Any] = {}
        for service in self.services:
            meta.update(service.meta())
        if self.backbone is not None:
            meta["backbone"] = True  # other seats of this mesh bootstrap the backbone off us
        d = digests.Digest(self.node_id, self.config.mesh, self.config.type,
                           tuple(self.transport.addrs), self.incarnation, heartbeat, leaving, meta)  # type: ignore[union-attr]
        return digests.sign(d, self.identity.sign)  # type: ignore[union-attr]

    def _record_failed_boot(self, boot_start: int, identity_done: int, exc: Exception) -> None:
        """The boot trace of a boot that failed at ``identity_loaded`` (no identity yet: the
        node is "unidentified") or at ``endpoint_created``."""
        cfg = self.config
        failed = "identity_loaded" if self.identity is None else "endpoint_created"
        labels = (NodeLabels(f"{cfg.mesh}.{cfg.type}.unidentified", cfg.mesh, cfg.type, "") if self.identity is None
                  else NodeLabels(self.name, cfg.mesh, cfg.type, self.node_id))
        telemetry = Telemetry(labels, setup=self.telemetry_setup)
        root = telemetry.tracer.start_span("mesh.node.ready", start_time=boot_start)
        with trace.use_span(root, end_on_exit=True):
            if self.identity is not None:
                telemetry.tracer.start_span("identity_loaded", start_time=boot_start).end(end_time=identity_done)
            step = telemetry.tracer.start_span(failed, start_time=identity_done)
            step.record_exception(exc)
            step.set_status(Status(StatusCode.ERROR, str(exc)))
            step.end()
            root.set_status(Status(StatusCode.ERROR, f"boot failed at {failed}: {exc}"))
        telemetry.shutdown()

    def _on_change(self, change: Change) -> None:
        """Directory changes are work too: each is a (short) span. The node's own entry is
        not a change of the mesh: its join follows its boot (``gossip_started``)."""
        entry = change.entry
        if self.telemetry is None or change.kind is ChangeKind.HEARTBEAT or entry.node_id == self.node_id:
            return
        if self.transport is not None:  # a restarted, silent or departed peer's connection is dropped
            self.transport.peer_changed(entry.node_id, entry.digest.incarnation, change.kind)
        with self.telemetry.tracer.start_as_current_span(
            f"directory.{change.kind.value}",
            attributes={"peer.name": entry.name, "peer.mesh": entry.mesh, "peer.id": entry.node_id},
        ):
            log.info("directory: %s %s", change.kind.value, entry.name)

    # -- what the control socket and the ready line show ------------------------

    def status(self) -> dict[str, Any]:
        """Who this node is, where, and its counters."""
        cores = self.gossip.cores.values() if self.gossip else []
        return {
            "name": self.name, "node_id": self.node_id, "mesh": self.config.mesh,
            "type": self.config.type, "address": self.address, "watch": self.config.watch,
            "cross_mesh": self.config.cross_mesh, "backbone": self.backbone is not None,
            "uptime_s": round(time.monotonic() - (self.started_at or time.monotonic()), 3),
            "directory_size": len(self.directory or ()),
            "gossip": {core.mesh: dict(core.stats) for core in cores},
            "transport": dict(self.transport.stats) if self.transport else {},
            "exporting": bool(self.telemetry and self.telemetry.exporting),
            "export": self.telemetry.export_status() if self.telemetry else None,
            "event_loop": event_loop.current(),
            "spans": spans.path_in_use(),
            "gc": {"thresholds": list(gc.get_threshold()),
                   "collections": [generation["collections"] for generation in gc.get_stats()]},
            **self.service_info(),
        }

    def service_info(self) -> dict[str, Any]:
        """What the services add to the ready line and ``status`` (the console: its URL)."""
        info: dict[str, Any] = {}
        for service in self.services:
            info.update(service.ready_info())
        return info

    # -- shutdown --------------------------------------------------------------

    async def stop(self, leave: bool = True) -> None:
        """Stop serving; with ``leave`` announce it first so peers drop us at once."""
        tracer = self.telemetry.tracer if self.telemetry else None
        for service in self.services:
            await service.stop()
        if tracer is not None and self.gossip is not None:
            with tracer.start_as_current_span("mesh.node.stop", attributes={"leave": leave}):
                if leave:
                    await self.gossip.leave()
                await self.gossip.stop()
        if self.known_peers is not None:
            self.known_peers.close()
        if self.control is not None:
            await self.control.close()
        if self.transport is not None:
            await self.transport.close()
        for service in self.services:
            service.close()
        if self.telemetry is not None:
            await self.telemetry.drain()
            self.telemetry.flush()
            self.telemetry.shutdown()
        else:  # never started, or its boot failed: the setup's processor is still its own
            self.telemetry_setup.shutdown()
