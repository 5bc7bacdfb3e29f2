"""Who talks to whom, read off the spans: edges between nodes, laid out in mesh swim-lanes.

A span whose parent span ran in another service is one call between two nodes: an edge from
the parent's service to the child's (``mesh1.gateway.x → mesh2.broker.y``), labelled with the
two span kinds (``PRODUCER→CONSUMER``, ``CLIENT→SERVER``...). Spans may arrive before their
parents (every process exports on its own schedule), so a child waits, bounded, for its
parent. Plain state without I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...captured import CapturedSpan
from ...identity import NODE_TYPES

DEFAULT_MAX_EDGES = 5_000
DEFAULT_MAX_REMEMBERED = 50_000


@dataclass(frozen=True)
class _Side:
    service: str
    mesh: str
    kind: str


def _side(span: CapturedSpan) -> _Side:
    mesh = span.resource.get("mesh.id") or span.attributes.get("mesh.id") or ""
    return _Side(span.service_name, str(mesh), span.kind)


@dataclass
class Edge:
    """Calls observed from ``source`` to ``target`` (node names, i.e. service names)."""

    source: str
    target: str
    source_mesh: str
    target_mesh: str
    count: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    last_ns: int = 0

    @property
    def cross_mesh(self) -> bool:
        return bool(self.source_mesh and self.target_mesh and self.source_mesh != self.target_mesh)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "source_mesh": self.source_mesh,
                "target_mesh": self.target_mesh, "count": self.count, "kinds": dict(self.kinds),
                "cross_mesh": self.cross_mesh, "last_ns": self.last_ns}


class EdgeTracker:
    """Turns a stream of spans into edges between services. Feed each span once."""

    def __init__(self, max_edges: int = DEFAULT_MAX_EDGES, remember: int = DEFAULT_MAX_REMEMBERED) -> None:
        self.max_edges = max_edges
        self.remember = remember
        self._edges: OrderedDict[tuple[str, str], Edge] = OrderedDict()  # least recently seen first
        self._sides: OrderedDict[str, _Side] = OrderedDict()  # span id -> where it ran
        self._waiting: OrderedDict[str, list[tuple[_Side, int]]] = OrderedDict()  # parent id -> children
        self.version = 0  # moves whenever an edge is added or counted

    def observe(self, spans: Iterable[CapturedSpan]) -> None:
        for span in spans:
            side = _side(span)
            self._remember(self._sides, span.span_id, side)
            for child, at in self._waiting.pop(span.span_id, []):
                self._count(side, child, at)
            if span.parent_span_id is None:
                continue
            parent = self._sides.get(span.parent_span_id)
            if parent is None:
                self._waiting.setdefault(span.parent_span_id, []).append((side, span.start_ns))
                self._trim(self._waiting)
            else:
                self._count(parent, side, span.start_ns)

    def edges(self) -> list[Edge]:
        return list(self._edges.values())

    def _count(self, parent: _Side, child: _Side, at: int) -> None:
        if parent.service == child.service:
            return  # a call inside one node is not an edge
        key = (parent.service, child.service)
        edge = self._edges.pop(key, None) or Edge(parent.service, child.service, parent.mesh, child.mesh)
        self._edges[key] = edge
        edge.count += 1
        label = f"{parent.kind}→{child.kind}"
        edge.kinds[label] = edge.kinds.get(label, 0) + 1
        edge.last_ns = max(edge.last_ns, at)
        while len(self._edges) > self.max_edges:
            self._edges.popitem(last=False)
        self.version += 1

    def _remember(self, table: OrderedDict, key: str, value: Any) -> None:
        table[key] = value
        self._trim(table)

    def _trim(self, table: OrderedDict) -> None:
        while len(table) > self.remember:
            table.popitem(last=False)


MESH_ORDER_LAST = "~"  # sorts after every mesh label
TYPE_RANK = {t: i for i, t in enumerate(NODE_TYPES)}  # broker, gateway, registry, compute, console


def layout(entries: list[dict[str, Any]], edges: list[Edge], self_name: str) -> dict[str, Any]:
    """Swim-lanes (one per mesh, nodes in ``NODE_TYPES`` order, then by name) and the edges between them.

    ``entries`` are directory entries (``Entry.as_dict``). An edge whose two ends are both in
    the lanes is drawn; the others (a client outside the fabric, a node that has left) are
    listed under ``external``.
    """
    lanes: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        lanes.setdefault(e["mesh"], []).append({
            "name": e["name"], "type": e["type"], "mesh": e["mesh"], "id_prefix": e["id_prefix"],
            "state": e["state"], "self": e["name"] == self_name,
        })
    known = {e["name"] for e in entries}
    drawn, external = [], []
    for edge in sorted(edges, key=lambda x: (x.source, x.target)):
        (drawn if edge.source in known and edge.target in known else external).append(edge.as_dict())
    return {
        "lanes": [{"mesh": mesh, "nodes": sorted(nodes, key=lambda n: (TYPE_RANK.get(n["type"], len(TYPE_RANK)), n["name"]))}
                  for mesh, nodes in sorted(lanes.items(), key=lambda kv: kv[0] or MESH_ORDER_LAST)],
        "edges": drawn,
        "external": external,
    }
