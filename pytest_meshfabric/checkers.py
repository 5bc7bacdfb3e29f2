"""Jepsen-style checkers: nothing acknowledged is lost, directories converge, traces stitch.

A :class:`History` records every produce a chaos run attempted (a unique value each) and its
outcome: ``ok`` (acknowledged), or ``info`` (an error or timeout: it may or may not have been
stored, as in Jepsen). After the run is healed:

* :func:`check_queue` fetches every record of the run's topic back from every broker (a
  total-queue checker): every ``ok`` value exactly once (else *lost* or *duplicated*), ``info``
  values at most once, nothing the run never sent (*unexpected*).
* :func:`check_directories` waits (bounded) until every running node lists exactly the running
  nodes of its mesh and watched meshes, all alive, and no node id under two names.
* :func:`check_traces` finds each produce's trace: one root, no orphans, failed produces end
  in an ERROR root, acknowledged ones reached the broker. Spans a SIGKILL destroyed before
  export are excused, and said so.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fabric.errors import FabricError

from .client import SyncFabricClient
from .cluster import Cluster
from .nemesis import FaultEvent
from .spanstore import SpanStore, SpanWaitTimeout
from .traces import Trace, find_traces
from .waiting import HarnessTimeout, wait_until

__all__ = ["History", "Op", "QueueReport", "check_directories", "check_queue", "check_traces"]

#: Seconds after a produce in which a SIGKILL may still destroy its unexported spans.
KILL_GRACE = 1.0
#: Seconds the final reads may retry (after heal, a node may still hold a stale connection).
FINAL_READ_TIMEOUT = 20.0


@dataclass
class Op:
    """One produce attempt: ``status`` is ``ok`` (acknowledged) or ``info`` (outcome unknown)."""

    index: int
    target: str
    value: bytes
    start: float
    end: float = 0.0
    status: str = "pending"
    ack: dict[str, Any] | None = None
    error: str | None = None

    def describe(self) -> str:
        outcome = f"ack {self.ack.get('broker')}@{self.ack.get('offset')}" if self.ack else f"error {self.error}"
        return f"#{self.index} produce {self.value.decode()} to {self.target}: {self.status} ({outcome})"


#: How long a history's produce may take before it is recorded as indeterminate (``info``).
PRODUCE_TIMEOUT = 3.0


class History:
    """The produces of one run, on a topic of its own, through one (reconnecting) client."""

    def __init__(self, cluster: Cluster, via: str | None = None, timeout: float = PRODUCE_TIMEOUT) -> None:
        self.cluster = cluster
        self.via = via
        self.timeout = timeout
        self.run_id = uuid.uuid4().hex[:10]
        self.topic = f"chaos-{self.run_id}"
        self.service = f"client.chaos-{self.run_id[:6]}"
        self.ops: list[Op] = []
        self.read_errors: list[str] = []  # failed attempts of the final reads (retried)
        self.mark = cluster.store.mark()  # the run's spans come after this
        self._client: SyncFabricClient | None = None
        self._client_address: str | None = None

    def client(self) -> SyncFabricClient:
        """A client through ``via`` (default: the cluster's entry), reconnected when that node restarted."""
        node = self.cluster.node(self.via) if self.via else self.cluster.entry
        if self._client is None or self._client_address != node.address:
            self.close()
            self._client = SyncFabricClient(self.cluster, self.via, service_name=self.service,
                                            timeout=self.timeout + 2)
            self._client.client.timeout = self.timeout
            self._client_address = node.address
        return self._client

    def produce(self, target: str) -> Op:
        """Produce one fresh value to ``target`` (e.g. ``mesh2.broker``) and record the outcome."""
        op = Op(len(self.ops), target, f"{self.run_id}-{len(self.ops)}".encode(), time.time())
        self.ops.append(op)
        try:
            op.ack = self.client().produce(self.topic, op.value, to=target)
            op.status = "ok"
        except (FabricError, TimeoutError, OSError) as exc:
            op.status, op.error = "info", f"{type(exc).__name__}: {exc}"[:200]
        op.end = time.time()
        return op

    def conflicting_acks(self) -> list[str]:
        """Acks of different values at the same broker and offset: a broker forgot what it acknowledged."""
        seen: dict[tuple[str, int], Op] = {}
        problems = []
        for op in self.ops:
            if op.ack is None:
                continue
            key = (op.ack["broker"], op.ack["offset"])
            if key in seen and seen[key].value != op.value:
                problems.append(f"{key[0]} acknowledged offset {key[1]} twice: {seen[key].describe()} "
                                f"and {op.describe()}")
            seen.setdefault(key, op)
        return problems

    def fetch_all(self) -> dict[bytes, list[str]]:
        """Every value of the run's topic on every broker → where it is (``broker@offset``)."""
        found: dict[bytes, list[str]] = {}
        for broker in (n for n in self.cluster.nodes if n.type == "broker"):
            offset = 0
            while True:
                batch = wait_until(lambda: self._fetch(broker.name, offset), FINAL_READ_TIMEOUT,
                                   f"a final read of {self.topic} from {broker.name}")
                for i, record in enumerate(batch["records"]):
                    found.setdefault(record["value"], []).append(f"{broker.name}@{offset + i}")
                offset = batch["next_offset"]
                if not batch["records"] or offset >= batch["end_offset"]:
                    break
        return found

    def _fetch(self, broker: str, offset: int) -> dict[str, Any] | None:
        """One fetch straight from ``broker`` (a fresh client: no node's stale connection in the way)."""
        try:
            reader = SyncFabricClient(self.cluster, broker, service_name=f"{self.service}-reader", timeout=5)
            try:
                return reader.fetch(self.topic, offset=offset, max_records=1000, from_=broker)
            finally:
                reader.close()
        except (FabricError, TimeoutError) as exc:
            self.read_errors.append(f"{broker}@{offset}: {type(exc).__name__}: {exc}")
            return None

    def summary(self) -> str:
        counts = Counter(op.status for op in self.ops)
        return f"{len(self.ops)} produce(s) on topic {self.topic}: {counts['ok']} ok, {counts['info']} indeterminate"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass
class QueueReport:
    """The total-queue check: what was lost, duplicated, or never sent."""

    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    recovered: int = 0  # indeterminate produces that were stored (fine)
    acknowledged: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.conflicts)

    def __str__(self) -> str:
        lines = [f"queue: {self.acknowledged} acknowledged, {len(self.lost)} lost, {len(self.duplicated)} "
                 f"duplicated, {len(self.unexpected)} unexpected, {self.recovered} indeterminate but stored"]
        for label, items in (("LOST (acknowledged, never fetched back)", self.lost),
                             ("DUPLICATED", self.duplicated), ("UNEXPECTED (never produced)", self.unexpected),
                             ("CONFLICTING ACKS", self.conflicts)):
            lines += [f"  {label}: {item}" for item in items]
        return "\n".join(lines)


def check_queue(history: History) -> QueueReport:
    """Fetch the run's topic from every broker and compare it with what was acknowledged."""
    found = history.fetch_all()
    report = QueueReport(conflicts=history.conflicting_acks())
    produced = {op.value: op for op in history.ops}
    for op in history.ops:
        places = found.get(op.value, [])
        report.acknowledged += op.status == "ok"
        if op.status == "ok" and not places:
            report.lost.append(op.describe())
        if len(places) > 1:
            report.duplicated.append(f"{op.describe()} stored at {places}")
        report.recovered += op.status == "info" and len(places) == 1
    report.unexpected = [f"{value!r} at {places}" for value, places in found.items() if value not in produced]
    return report


def directory_problems(cluster: Cluster) -> list[str]:
    """Divergent directories, and any node id listed under two names."""
    problems = [f"{name}: {diff}" for name, diff in cluster.divergence().items()]
    for node in (n for n in cluster.nodes if n.running):
        try:
            entries = node.directory()
        except FabricError:
            continue  # already reported by divergence()
        names_by_id: dict[str, set[str]] = {}
        for entry in entries:
            names_by_id.setdefault(entry.get("node_id", entry["name"]), set()).add(entry["name"])
        problems += [f"{node.name} lists node {nid[:6]} under several names {sorted(names)}"
                     for nid, names in names_by_id.items() if len(names) > 1]
    return problems


def check_directories(cluster: Cluster, timeout: float = 15.0) -> list[str]:
    """Wait (at most ``timeout`` s) for convergence; return what still differs (empty: converged)."""
    try:
        cluster.wait_converged(timeout)
    except HarnessTimeout:
        pass
    return directory_problems(cluster)


def _excused(op: Op, faults: list[FaultEvent]) -> bool:
    """A node was SIGKILLed while, or just after, ``op`` ran: its unexported spans died with it."""
    return any(e.kind == "kill" and op.start <= e.start <= op.end + KILL_GRACE for e in faults)


def trace_problems(trace: Trace | None, op: Op, faults: list[FaultEvent]) -> list[str]:
    """What is wrong with the trace of ``op`` (empty: stitched end to end, or excused)."""
    if trace is None:
        return [f"{op.describe()}: no trace with a root span from the client"]
    problems = []
    if len(trace.roots) != 1:
        problems.append(f"{len(trace.roots)} root spans")
    excused = _excused(op, faults)
    if trace.orphans and not excused:
        problems.append(f"{len(trace.orphans)} orphan span(s): {[s.name for s in trace.orphans]}")
    root = trace.root
    if op.status == "info" and root is not None and root.status != "ERROR":
        problems.append(f"the produce failed ({op.error}) but its root span has status {root.status}, not ERROR")
    if op.status == "ok" and not excused and not trace.find(name="receive *", service=op.ack["broker"]):
        problems.append(f"acknowledged by {op.ack['broker']}, but its trace has no receive span from it")
    return [f"{op.describe()}: {p}" for p in problems]


def check_traces(store: SpanStore, history: History, faults: list[FaultEvent],
                 timeout: float = 10.0) -> tuple[list[str], list[Trace]]:
    """Every produce's trace, waited for (bounded); returns ``(problems, traces with problems)``."""
    def evaluate(spans: list) -> tuple[list[str], list[Trace]]:
        traces = find_traces(spans, root=f"produce {history.topic}", service=history.service)
        traces = [t for t in traces if t.root is not None and t.root.service_name == history.service]
        problems, bad = [], []
        for i, op in enumerate(history.ops):
            found = trace_problems(traces[i] if i < len(traces) else None, op, faults)
            problems += found
            if found and i < len(traces):
                bad.append(traces[i])
        if len(traces) > len(history.ops):
            problems.append(f"{len(traces)} produce traces for {len(history.ops)} produces")
        return problems, bad

    def stitched(spans: list) -> tuple[list[str], list[Trace]] | None:
        result = evaluate(spans)
        return None if result[0] else result

    try:
        return store.wait_for(stitched, timeout, "every produce's trace to stitch", since=history.mark)
    except SpanWaitTimeout:
        return evaluate(store.all(since=history.mark))
