"""The nemesis: real faults injected into a running cluster, each one a span and a report event.

::

    def test_partition_heals(fabric, nemesis):
        nemesis.partition(["mesh1", "mesh2"])     # every mesh its own side; node-to-node packets dropped
        nemesis.kill(fabric["mesh1"]["compute"])  # SIGKILL
        nemesis.heal()                            # rules removed, paused nodes resumed
        fabric.wait_converged()

Churn: ``kill`` (SIGKILL), ``stop`` (clean leave), ``restart`` (same data dir: same identity and
name), ``pause``/``resume`` (SIGSTOP/SIGCONT), ``spawn(mesh, type)``. Network (netns backend
only, iptables inside the nodes' namespaces, see :mod:`.packetfilter`): ``partition(groups)``,
``partition_one_way(src, dst)``, ``isolate(node)``, ``loss(node or (a, b), p)``,
``latency(node or (a, b), ms)`` (no netem here: NFQUEUE and a user-space delayer process, see
:mod:`.latency`); the docker backend has the same, and ``disconnect(node)`` (Docker's network
disconnect, healed by connect). A fault that this backend or machine cannot inject is *skipped* under the
fixture (``FaultUnavailable`` from the plain API), never faked. Links to the test process
(OTLP receiver, clients) are never cut.

Every fault is a span of service ``nemesis`` in the plugin's receiver (lasting faults end when
healed) and a :class:`FaultEvent` in the test report. :meth:`Nemesis.close` always runs at
teardown: rules flushed, nodes resumed and restarted, spawned nodes removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, Union

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Span

from fabric.errors import FabricError

from . import latency as delay
from . import packetfilter
from .cluster import Cluster, Mesh
from .nodes import NodeHandle
from .packetfilter import PacketFilter, RuleSet

__all__ = ["FaultEvent", "FaultUnavailable", "Nemesis", "nemesis"]

Target = Union[NodeHandle, Mesh, str, Iterable[Any]]
NEMESIS_KEY = pytest.StashKey["Nemesis"]()


class FaultUnavailable(FabricError):
    """This fault cannot be injected on this backend or machine; the message says why."""


@dataclass
class FaultEvent:
    """One injected fault: what, when (wall clock, seconds), which nodes; ``end`` once healed."""

    kind: str
    nodes: tuple[str, ...]
    detail: str = ""
    start: float = field(default_factory=time.time)
    end: float | None = None
    span: Span | None = field(default=None, repr=False)
    rules: RuleSet | None = field(default=None, repr=False)
    delayers: list[delay.Delayer] = field(default_factory=list, repr=False)
    undo: Callable[[], None] | None = field(default=None, repr=False)  # ends a fault the backend made

    @property
    def lasting(self) -> bool:
        return self.span is not None and self.end is None

    def describe(self, since: float | None = None) -> str:
        """``+1.234s partition mesh1.broker.ab12cd, ... (detail) [healed +2.5s]``."""
        base = since if since is not None else self.start
        text = f"+{self.start - base:.3f}s {self.kind} {', '.join(self.nodes)}"
        text += f" ({self.detail})" if self.detail else ""
        return text + (f" [until +{self.end - base:.3f}s]" if self.end is not None else "")


class Nemesis:
    """Faults for one cluster. ``on_unavailable(reason)`` decides what an impossible fault does:
    raise :class:`FaultUnavailable` (the default) or, under the fixture, ``pytest.skip``."""

    def __init__(self, cluster: Cluster, on_unavailable: Callable[[str], NoReturn] | None = None) -> None:
        self.cluster = cluster
        self.events: list[FaultEvent] = []
        self.spawned: list[NodeHandle] = []
        self.started = time.time()
        self._on_unavailable = on_unavailable
        self._filter = PacketFilter(cluster.backend.host)
        self._delay_failures: list[str] = []
        self._provider = TracerProvider(resource=Resource.create({"service.name": "nemesis"}))
        endpoint = f"{cluster.receiver.http_endpoint}/v1/traces"
        self._provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
        self._tracer = self._provider.get_tracer("pytest_meshfabric.nemesis")

    # -- bookkeeping --

    def _event(self, kind: str, nodes: Iterable[NodeHandle], detail: str = "", lasting: bool = False,
               rules: RuleSet | None = None) -> FaultEvent:
        names = tuple(n.name for n in nodes)
        event = FaultEvent(kind, names, detail, rules=rules)
        span = self._tracer.start_span(f"nemesis.{kind}", attributes={
            "nemesis.fault": kind, "nemesis.nodes": list(names), "nemesis.detail": detail,
            "meshfabric.cluster": self.cluster.label})
        if lasting:
            event.span = span
        else:
            span.end()
            event.end = event.start
        self.events.append(event)
        return event

    def _end(self, event: FaultEvent) -> None:
        undo, event.undo = event.undo, None
        if undo is not None:
            undo()
        if event.rules is not None:
            self._filter.remove(event.rules)
        for delayer in event.delayers:  # after the rules: no packet is queued to a stopped delayer
            failure = delayer.failure()
            delayer.close()
            if failure:
                self._delay_failures.append(failure)
        if event.span is not None and event.end is None:
            event.span.end()
        if event.end is None:
            event.end = time.time()

    def report(self) -> str:
        """Every fault so far, one line each, times relative to the nemesis's start."""
        return "\n".join(e.describe(self.started) for e in self.events) or "(no faults injected)"

    def nodes(self, target: Target) -> list[NodeHandle]:
        """Nodes named by ``target``: a NodeHandle, a Mesh, a mesh name, a node name (or
        ``<mesh>.<type>``), or an iterable of those."""
        if isinstance(target, NodeHandle):
            return [target]
        if isinstance(target, Mesh):
            return list(target)
        if isinstance(target, str):
            if target in self.cluster.meshes:
                return list(self.cluster.meshes[target])
            return [self.cluster.node(target)]
        return [n for item in target for n in self.nodes(item)]

    def _one(self, target: NodeHandle | str) -> NodeHandle:
        found = self.nodes(target)
        if len(found) != 1:
            raise FabricError(f"{target!r} names {len(found)} nodes; this fault takes exactly one node")
        return found[0]

    # -- churn --

    def kill(self, node: NodeHandle | str) -> NodeHandle:
        """SIGKILL: no leave, no flush; unexported spans of the node are lost with it."""
        node = self._one(node)
        self._event("kill", [node])
        node.kill()
        return node

    def stop(self, node: NodeHandle | str) -> NodeHandle:
        """SIGTERM: the node announces its leave and exits."""
        node = self._one(node)
        self._event("stop", [node])
        node.stop()
        return node

    def restart(self, node: NodeHandle | str) -> NodeHandle:
        """Start the node again on its data dir (stopping it first if it runs): same identity and name."""
        node = self._one(node)
        self._end_pause(node)
        self._event("restart", [node])
        return node.restart(self.cluster.ready_timeout)

    def pause(self, node: NodeHandle | str) -> NodeHandle:
        """SIGSTOP until :meth:`resume` (or heal): peers see it turn suspect, then remove it."""
        node = self._one(node)
        self._event("pause", [node], lasting=True)
        node.pause()
        return node

    def resume(self, node: NodeHandle | str) -> NodeHandle:
        """SIGCONT after :meth:`pause`."""
        node = self._one(node)
        self._end_pause(node)
        node.resume()
        return node

    def _end_pause(self, node: NodeHandle) -> None:
        for event in self.events:
            if event.kind == "pause" and event.nodes == (node.name,) and event.end is None:
                self._end(event)

    def spawn(self, mesh: str, type: str) -> NodeHandle:
        """A new node of ``type`` joins ``mesh`` (ready when returned; removed at close)."""
        node = self.cluster.add_node(mesh, type)
        self.spawned.append(node)
        self._event("spawn", [node], f"{type} joins {mesh}")
        return node

    # -- network --

    def _require_network(self, fault: str) -> None:
        reason = None
        if not self.cluster.backend.network_faults:
            reason = (f"{fault} needs a network namespace per node, but the {self.cluster.backend.name} backend "
                      "puts every node on one loopback; run as root with --fabric-backend netns")
        else:
            reason = packetfilter.unavailable_reason()
        if reason:
            self._unavailable(f"meshfabric nemesis: {fault} is unavailable: {reason}")

    def _unavailable(self, reason: str) -> NoReturn:
        if self._on_unavailable is not None:
            self._on_unavailable(reason)
        raise FaultUnavailable(reason)

    def partition(self, groups: Iterable[Target]) -> FaultEvent:
        """Cut every link between nodes of different ``groups``, both ways. With one group, the
        rest of the cluster is the other side: ``partition(["mesh1"])``, ``partition([[a, b]])``."""
        return self._cut([self.nodes(g) for g in groups], "partition")

    def _cut(self, sides: list[list[NodeHandle]], kind: str, subjects: list[NodeHandle] | None = None) -> FaultEvent:
        self._require_network(kind)
        if len(sides) == 1:
            sides.append([n for n in self.cluster.nodes if n not in sides[0]])
        rules = [packetfilter.drop_from(a.namespace, b.ip)
                 for i, side in enumerate(sides) for a in side
                 for j, other in enumerate(sides) if i != j for b in other]
        detail = " | ".join(",".join(n.name for n in side) for side in sides)
        if kind == "isolate":
            detail = "cut off from every other node"
        subjects = subjects if subjects is not None else [n for side in sides for n in side]
        return self._event(kind, subjects, detail, lasting=True, rules=self._filter.apply(rules))

    def partition_one_way(self, sources: Target, destinations: Target) -> FaultEvent:
        """Packets from ``sources`` no longer reach ``destinations``; the other way still works."""
        self._require_network("one-way partition")
        src, dst = self.nodes(sources), self.nodes(destinations)
        rules = [packetfilter.drop_from(d.namespace, s.ip) for d in dst for s in src]
        detail = f"{','.join(n.name for n in src)} -> {','.join(n.name for n in dst)} dropped"
        return self._event("partition-one-way", src + dst, detail, lasting=True, rules=self._filter.apply(rules))

    def isolate(self, node: NodeHandle | str) -> FaultEvent:
        """Cut ``node`` off from every other node (the test process still reaches it)."""
        node = self._one(node)
        return self._cut([[node]], "isolate", subjects=[node])

    def loss(self, target: NodeHandle | str | tuple[Any, Any], p: float) -> FaultEvent:
        """Drop a random share ``p`` of packets: of all node-to-node traffic of a node, or on
        the link between two nodes ``(a, b)`` (both directions)."""
        self._require_network("loss")
        if not 0 < p <= 1:
            raise FabricError(f"loss probability must be in (0, 1], not {p!r}")
        if isinstance(target, tuple):
            a, b = self._one(target[0]), self._one(target[1])
            rules = [packetfilter.drop_from(a.namespace, b.ip, p), packetfilter.drop_from(b.namespace, a.ip, p)]
            return self._event("loss", [a, b], f"p={p} on the link", lasting=True, rules=self._filter.apply(rules))
        node = self._one(target)
        rules = [packetfilter.drop_all(node.namespace, p, "in"), packetfilter.drop_all(node.namespace, p, "out")]
        return self._event("loss", [node], f"p={p} in and out", lasting=True, rules=self._filter.apply(rules))

    def latency(self, target: NodeHandle | str | tuple[Any, Any], ms: float) -> FaultEvent:
        """Delay every packet ``ms`` milliseconds on the link between two nodes ``(a, b)`` (each
        way: a round trip takes ``2 * ms`` more), or every node-to-node packet in and out of a
        node. Overlapping latency faults do not add up: the one applied first wins."""
        self._require_network("latency")
        reason = delay.unavailable_reason()
        if reason:
            self._unavailable(f"meshfabric nemesis: latency is unavailable: {reason}")
        if not 0 < ms <= 60_000:
            raise FabricError(f"latency must be in (0, 60000] ms, not {ms!r}")
        if isinstance(target, tuple):
            a, b = self._one(target[0]), self._one(target[1])
            nodes, detail = [a, b], f"{ms:g} ms each way on the link"
            targets = [(a.namespace or "", b.ip), (b.namespace or "", a.ip)]
        else:
            nodes, detail = [self._one(target)], f"{ms:g} ms in and out"
            targets = [(nodes[0].namespace or "", None)]
        try:
            rules, delayers = delay.start_delays(targets, ms)
        except delay.DelayerUnavailable as exc:
            self._unavailable(f"meshfabric nemesis: latency is unavailable: {exc}")
        try:
            applied = self._filter.apply(rules)
        except BaseException:
            for delayer in delayers:
                delayer.close()
            raise
        event = self._event("latency", nodes, detail, lasting=True, rules=applied)
        event.delayers = delayers
        return event

    def disconnect(self, node: NodeHandle | str) -> FaultEvent:
        """Take ``node`` off the network altogether until healed: the docker backend's network
        disconnect/connect. Unlike ``isolate``, the test process loses it too (spans it exports
        meanwhile may be lost; its control socket still answers)."""
        node = self._one(node)
        backend: Any = self.cluster.backend
        if not hasattr(backend, "disconnect"):
            self._unavailable(f"meshfabric nemesis: disconnect is unavailable: it needs the docker backend, "
                              f"not {backend.name}")
        backend.disconnect(node.placement)
        event = self._event("disconnect", [node], "off the network", lasting=True)
        event.undo = lambda: backend.connect(node.placement)
        return event

    def heal_event(self, event: FaultEvent) -> None:
        """End one lasting fault (remove its rules and delayers, or resume its paused node)."""
        if event.kind == "pause":
            self.resume(event.nodes[0])
        self._end(event)
        self._raise_delay_failures()

    def _raise_delay_failures(self) -> None:
        failures, self._delay_failures = self._delay_failures, []
        if failures:
            raise delay.DelayerError("; ".join(failures))

    def heal(self) -> None:
        """End every network fault and resume every paused node (killed nodes stay down)."""
        self._filter.flush_all()
        for event in self.events:
            if event.end is None:
                if event.kind == "pause":
                    node = self.cluster.node(event.nodes[0])
                    node.resume()
                self._end(event)
        for node in self.cluster.nodes:
            if node.alive and node.paused:
                node.resume()
        self._event("heal", [])
        self._raise_delay_failures()

    # -- teardown --

    def restore(self, timeout: float | None = None) -> None:
        """Heal, restart every node that is down, remove spawned nodes, wait until converged:
        every directory lists the nodes it should, each alive and heard from since the heal
        (an entry from before it stays alive for ``--suspect-after`` whether or not its node
        can be heard again). A delayer that died is reported after the cluster is restored."""
        try:
            self.heal()
        except delay.DelayerError as exc:
            self._delay_failures.append(str(exc))
        healed_at = time.monotonic()
        for node in self.spawned:
            if node in self.cluster.nodes:
                self._filter.forget(node.namespace or "")
                self.cluster.remove_node(node)
        self.spawned.clear()
        for node in self.cluster.nodes:
            if not node.alive:
                node.start(self.cluster.ready_timeout)
        self.cluster.wait_converged(timeout, since=healed_at)
        self._raise_delay_failures()

    def close(self) -> None:
        """Always at teardown: rules flushed and nodes resumed first, then restarts and convergence."""
        try:
            self.restore()
        finally:
            self._filter.flush_all()
            for event in self.events:
                for delayer in event.delayers:
                    delayer.close()
            for node in self.cluster.nodes:
                if node.alive:
                    node.resume()
            self._provider.shutdown()


@pytest.fixture
def nemesis(request: pytest.FixtureRequest) -> Iterator[Nemesis]:
    """Faults for the ``fabric`` cluster: ``kill``/``stop``/``restart``/``pause``/``resume``/``spawn``
    and, on the netns backend, ``partition``/``partition_one_way``/``isolate``/``loss``/``latency``/``heal``.
    Each fault is a span (service ``nemesis``) and a line of the report section 'meshfabric: faults';
    faults this backend cannot inject skip the test. Teardown heals everything and restores the cluster."""
    cluster: Cluster = request.getfixturevalue("fabric")
    chaos = Nemesis(cluster, on_unavailable=lambda reason: pytest.skip(reason))
    request.node.stash[NEMESIS_KEY] = chaos
    try:
        yield chaos
    finally:
        chaos.close()
        request.node.user_properties.append(("meshfabric.faults", chaos.report()))


def report_section(item: pytest.Item) -> tuple[str, str] | None:
    """The 'meshfabric: faults' report section of a test that used the ``nemesis`` fixture."""
    chaos = item.stash.get(NEMESIS_KEY, None)
    if chaos is None:
        return None
    return "meshfabric: faults injected (times from the nemesis's start)", chaos.report()
