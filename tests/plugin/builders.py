"""Synthetic spans for unit tests of the trace tools: a tree written as nested tuples."""

from __future__ import annotations

import itertools
from typing import Any

from pytest_meshfabric import CapturedSpan, Trace
from tests.plugin.examples.cross_mesh import CROSS_MESH_PRODUCE

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
_ids = itertools.count(1)

# (name, service, kind, attributes, children); times are laid out so that children nest.
Tree = tuple[str, str, str, dict[str, Any], list["Tree"]]


def build(tree: Tree, trace_id: str = TRACE_ID, parent: str | None = None, start: int = 1_000_000_000,
          status: dict[str, str] | None = None) -> list[CapturedSpan]:
    """Spans for ``tree``: each child starts after its earlier siblings and ends inside its parent."""
    name, service, kind, attributes, children = tree
    span_id = f"{next(_ids):016x}"
    spans: list[CapturedSpan] = []
    cursor = start + 10
    for child in children:
        child_spans = build(child, trace_id, span_id, cursor, status)
        spans += child_spans
        cursor = max(s.end_ns for s in child_spans) + 10
    mesh = service.split(".")[0] if service.startswith("mesh") else ""
    own = CapturedSpan(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
                       start_ns=start, end_ns=cursor + 10, status=(status or {}).get(name, "UNSET"),
                       attributes={"mesh.id": mesh, **attributes}, resource={"service.name": service},
                       service_name=service)
    return [own, *spans]


def cross_mesh_tree(broker: str = "mesh2.broker.61182f") -> Tree:
    """The cross-mesh produce: client → gateway (resolve, send) → mesh2 broker's receive."""
    gw = "mesh1.gateway.a7e988"
    return ("produce orders", "client.7dc973", "PRODUCER", {"messaging.destination.name": "orders"}, [
        ("produce", gw, "SERVER", {}, [
            ("resolve mesh2.broker", gw, "INTERNAL", {"resolve.name": broker}, []),
            ("send orders", gw, "PRODUCER", {}, [
                ("receive orders", broker, "CONSUMER",
                 {"messaging.destination.name": "orders", "log.fsync": True}, []),
            ]),
        ]),
    ])


def cross_mesh_trace(**kwargs: Any) -> Trace:
    return Trace(build(cross_mesh_tree(), **kwargs))


#: The shape of :func:`cross_mesh_trace`: the one the documented example asserts.
CROSS_MESH_SHAPE = CROSS_MESH_PRODUCE
