"""The console's span store and topology, as plain state: no server, no processes."""

from __future__ import annotations

import itertools
import time

import pytest

from fabric.otlp import CapturedSpan
from fabric.services.console.store import SpanStore
from fabric.services.console.topology import EdgeTracker, layout

_ids = itertools.count(1)


def span(trace: int, name: str, service: str, parent: CapturedSpan | None = None, kind: str = "INTERNAL",
         start: int = 0, duration: int = 10, mesh: str | None = None) -> CapturedSpan:
    mesh = mesh if mesh is not None else service.split(".")[0] if service.count(".") == 2 else ""
    return CapturedSpan(trace_id=f"{trace:032x}", span_id=f"{next(_ids):016x}",
                        parent_span_id=parent.span_id if parent else None, name=name, kind=kind,
                        start_ns=start, end_ns=start + duration, service_name=service,
                        resource={"service.name": service, "mesh.id": mesh})


def entry(name: str, state: str = "alive") -> dict:
    mesh, type, hex6 = name.split(".")
    return {"name": name, "mesh": mesh, "type": type, "id_prefix": hex6, "state": state}


# -- the store -----------------------------------------------------------------------


def test_duplicates_are_stored_once():
    store = SpanStore()
    root = span(1, "root", "mesh1.broker.aaaaaa")
    assert store.add([root]) == [root]
    assert store.add([root]) == []
    assert len(store) == 1 and store.stats["duplicates"] == 1


def test_the_oldest_traces_are_evicted_whole():
    store = SpanStore(max_spans=5)
    first = [span(1, f"s{i}", "svc") for i in range(3)]
    second = [span(2, f"s{i}", "svc") for i in range(2)]
    store.add(first + second)
    store.add([span(3, "new", "svc")])
    assert store.trace(f"{1:032x}") is None, "trace 1 is the oldest: it goes, all of it"
    assert [s.name for s in store.trace(f"{2:032x}")] == ["s0", "s1"]
    assert len(store) == 3 and store.stats["evicted"] == 3


def test_one_huge_trace_cannot_take_the_whole_store():
    store = SpanStore(max_spans=100, max_spans_per_trace=10)
    store.add([span(1, f"s{i}", "svc") for i in range(25)])
    assert len(store) == 10 and store.stats["dropped_over_trace_cap"] == 15


def test_search_matches_service_and_name_on_one_span_newest_first_paged():
    store = SpanStore()
    for trace in range(1, 8):
        root = span(trace, "mesh.node.ready", f"mesh1.broker.{trace:06x}", start=trace * 1000)
        store.add([root, span(trace, "gossip_started", f"mesh1.broker.{trace:06x}", root, start=trace * 1000 + 1)])
    store.add([span(99, "produce orders", "test-writer", start=50_000)])

    total, page = store.search(offset=0, limit=3)
    assert total == 8 and [t["root_name"] for t in page] == ["produce orders", "mesh.node.ready", "mesh.node.ready"]
    total, page = store.search(service="BROKER.000003", name="gossip")
    assert total == 1 and page[0]["root_service"] == "mesh1.broker.000003" and page[0]["span_count"] == 2
    assert store.search(service="test-writer", name="gossip")[0] == 0, "both must match the same span"
    total, page = store.search(name="mesh.node.ready", offset=5, limit=5)
    assert total == 7 and len(page) == 2


def test_a_trace_whose_root_has_not_arrived_is_summarised_from_its_earliest_orphan():
    store = SpanStore()
    missing = span(1, "client", "test-writer")
    child = span(1, "produce", "mesh1.gateway.aaaaaa", missing, kind="SERVER", start=5)
    store.add([child])
    summary = store.summary(child.trace_id)
    assert summary["root_name"] == "produce" and summary["root_complete"] is False
    store.add([missing])
    assert store.summary(child.trace_id)["root_complete"] is True


def test_thousands_of_spans_search_quickly():
    store = SpanStore()
    spans = []
    for trace in range(4000):
        root = span(trace, "writer.produce", f"mesh{trace % 3}.gateway.abcdef", start=trace)
        spans += [root, span(trace, "send demo", f"mesh{trace % 3}.gateway.abcdef", root, kind="PRODUCER")]
    started = time.perf_counter()
    store.add(spans)
    total, page = store.search(limit=50)
    store.search(service="mesh1", name="send")
    assert total == 4000 and len(page) == 50
    assert time.perf_counter() - started < 2.0


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        SpanStore(max_spans=0)


# -- edges ---------------------------------------------------------------------------


def test_an_edge_joins_the_services_of_a_parent_and_its_child():
    tracker = EdgeTracker()
    send = span(1, "send orders", "mesh1.gateway.aaaaaa", kind="PRODUCER")
    receive = span(1, "receive orders", "mesh2.broker.bbbbbb", send, kind="CONSUMER")
    append = span(1, "log.append", "mesh2.broker.bbbbbb", receive)
    tracker.observe([send, receive, append])
    [edge] = tracker.edges()
    assert (edge.source, edge.target, edge.count) == ("mesh1.gateway.aaaaaa", "mesh2.broker.bbbbbb", 1)
    assert edge.kinds == {"PRODUCER→CONSUMER": 1} and edge.cross_mesh


def test_a_child_that_arrives_before_its_parent_waits_for_it():
    tracker = EdgeTracker()
    call = span(1, "lookup", "mesh1.compute.cccccc", kind="CLIENT")
    serve = span(1, "lookup", "mesh1.registry.dddddd", call, kind="SERVER")
    tracker.observe([serve])
    assert tracker.edges() == []
    tracker.observe([call])
    [edge] = tracker.edges()
    assert (edge.source, edge.target, edge.cross_mesh) == ("mesh1.compute.cccccc", "mesh1.registry.dddddd", False)


def test_edges_and_memory_stay_bounded():
    tracker = EdgeTracker(max_edges=3, remember=10)
    for i in range(20):
        parent = span(i, "call", f"mesh1.gateway.{i:06x}")
        tracker.observe([parent, span(i, "serve", "mesh1.broker.ffffff", parent)])
        tracker.observe([span(i, "orphan", "mesh1.broker.ffffff", span(i, "never", "x"))])
    assert len(tracker.edges()) == 3
    assert len(tracker._sides) <= 10 and len(tracker._waiting) <= 10


def test_layout_puts_each_mesh_in_a_lane_and_outside_callers_aside():
    tracker = EdgeTracker()
    client = span(1, "produce orders", "test-writer", kind="PRODUCER")
    gateway = span(1, "produce", "mesh1.gateway.aaaaaa", client, kind="SERVER")
    broker = span(1, "receive orders", "mesh2.broker.bbbbbb", gateway, kind="CONSUMER")
    tracker.observe([client, gateway, broker])
    entries = [entry("mesh2.broker.bbbbbb"), entry("mesh1.console.eeeeee"), entry("mesh1.gateway.aaaaaa"),
               entry("mesh1.broker.cccccc", "suspect")]
    view = layout(entries, tracker.edges(), "mesh1.console.eeeeee")
    assert [lane["mesh"] for lane in view["lanes"]] == ["mesh1", "mesh2"]
    assert [n["type"] for n in view["lanes"][0]["nodes"]] == ["broker", "gateway", "console"]
    assert [n["self"] for n in view["lanes"][0]["nodes"]] == [False, False, True]
    assert [(e["source"], e["target"], e["cross_mesh"]) for e in view["edges"]] == [
        ("mesh1.gateway.aaaaaa", "mesh2.broker.bbbbbb", True)]
    assert [(e["source"], e["target"]) for e in view["external"]] == [("test-writer", "mesh1.gateway.aaaaaa")]
