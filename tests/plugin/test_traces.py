"""Unit tests of the trace model: queries, trees, stitching checks (synthetic spans, no processes)."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_meshfabric import Trace, assert_stitched, find_traces
from tests.plugin.builders import build, cross_mesh_trace, cross_mesh_tree

OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"


def test_find_traces_by_root_service_glob_and_attribute():
    spans = build(cross_mesh_tree()) + build(("mesh.node.ready", "mesh1.broker.239dc9", "INTERNAL", {}, []),
                                             trace_id=OTHER_TRACE)
    assert [len(t) for t in find_traces(spans)] == [5, 1]
    assert [t.trace_id for t in find_traces(spans, root="produce *")] == [cross_mesh_trace().trace_id]
    assert len(find_traces(spans, service="mesh2.broker.*")) == 1
    assert len(find_traces(spans, service="mesh1.*")) == 2
    assert len(find_traces(spans, **{"resolve.name": "mesh2.broker.61182f"})) == 1
    assert find_traces(spans, root="produce orders", service="mesh3.*") == []


def test_walk_is_depth_first_with_depths_and_the_tree_has_the_root():
    trace = cross_mesh_trace()
    assert [(d, s.name) for d, s in trace.walk()] == [
        (0, "produce orders"), (1, "produce"), (2, "resolve mesh2.broker"), (2, "send orders"),
        (3, "receive orders")]
    assert trace.tree.span.name == "produce orders"
    assert [c.span.name for c in trace.tree.children[0].children] == ["resolve mesh2.broker", "send orders"]
    assert trace.meshes == {"mesh1", "mesh2"}
    assert trace.one(name="receive orders").service_name == "mesh2.broker.61182f"
    with pytest.raises(AssertionError, match="expected one span"):
        trace.one(service="mesh1.gateway.*")


def test_render_shows_the_tree_and_marks_orphans():
    spans = cross_mesh_trace().spans
    orphaned = Trace([s for s in spans if s.name != "send orders"])
    text = orphaned.render()
    assert "receive orders [mesh2.broker.61182f] CONSUMER" in text
    assert "(ORPHAN: parent missing)" in text
    assert orphaned.root is not None and len(orphaned.orphans) == 1


def test_assert_stitched_passes_on_a_whole_trace_and_returns_it():
    trace = cross_mesh_trace()
    assert assert_stitched(trace, services=["client.*", "mesh2.broker.*"], meshes=["mesh1", "mesh2"]) is trace
    assert assert_stitched(trace.spans).trace_id == trace.trace_id  # a plain list of spans works too


def test_a_consumer_may_outlive_its_producer_but_other_children_may_not():
    spans = cross_mesh_trace().spans
    send = next(s for s in spans if s.name == "send orders")
    late = {s.name: dataclasses.replace(s, end_ns=send.end_ns + 5_000) for s in spans
            if s.name in ("receive orders", "resolve mesh2.broker")}
    handoff = [late.get(s.name, s) if s.name == "receive orders" else s for s in spans]
    assert_stitched(handoff)
    overrun = [late.get(s.name, s) if s.name == "resolve mesh2.broker" else s for s in spans]
    with pytest.raises(AssertionError, match="resolve mesh2.broker .* ends after its parent"):
        assert_stitched(overrun)


@pytest.mark.parametrize("broken, message", [
    ("orphan", r"parent [0-9a-f]+ of receive orders .* is missing"),
    ("two ids", "spans from 2 trace ids"),
    ("mesh", r"no span from mesh\(es\) \['mesh3'\]"),
    ("service", "no span from a service matching 'mesh3.broker.*'"),
    ("starts early", "resolve mesh2.broker .* starts before its parent"),
])
def test_assert_stitched_names_what_is_wrong_and_shows_the_tree(broken, message):
    spans = cross_mesh_trace().spans
    kwargs = {}
    if broken == "orphan":
        spans = [s for s in spans if s.name != "send orders"]
    elif broken == "two ids":
        spans = spans + build(("stray", "mesh1.broker.239dc9", "INTERNAL", {}, []), trace_id=OTHER_TRACE)
    elif broken == "mesh":
        kwargs = {"meshes": ["mesh1", "mesh3"]}
    elif broken == "service":
        kwargs = {"services": ["mesh3.broker.*"]}
    else:
        parent = next(s for s in spans if s.name == "produce")
        spans = [dataclasses.replace(s, start_ns=parent.start_ns - 1) if s.name == "resolve mesh2.broker" else s
                 for s in spans]
    with pytest.raises(AssertionError, match=message) as info:
        assert_stitched(spans, **kwargs)
    assert "the trace is not stitched end to end" in str(info.value)
    assert "produce orders [client.7dc973] PRODUCER" in str(info.value)  # the tree is in the message
