"""Unit tests of trace normalisation, snapshot gates and the Jaeger JSON export."""

from __future__ import annotations

import json

import pytest
import yaml

from pytest_meshfabric import SnapshotGate, Trace, mask_service, normalise, to_jaeger, write_trace
from tests.plugin.builders import build, cross_mesh_tree


@pytest.mark.parametrize("name, masked", [
    ("mesh1.broker.239dc9", "mesh1.broker.*"), ("client.3fa2b1", "client.*"),
    ("test-writer", "test-writer"), ("mesh1.broker", "mesh1.broker"), ("mesh1.broker.239DC9", "mesh1.broker.239DC9"),
])
def test_mask_service_hides_only_node_id_suffixes(name, masked):
    assert mask_service(name) == masked


def test_normalised_shapes_have_no_ids_times_or_attributes_and_ignore_the_node_ids():
    one = normalise(Trace(build(cross_mesh_tree("mesh2.broker.61182f"))))
    other = normalise(Trace(build(cross_mesh_tree("mesh2.broker.ffffff"), start=5_000_000_000)))
    assert one == other
    text = yaml.safe_dump(one)
    for leak in ("61182f", "trace", "span_id", "start", "attributes", "orders'"):
        assert leak not in text
    assert one["service"] == "client.*" and one["children"][0]["service"] == "mesh1.gateway.*"


def test_runs_of_identical_siblings_collapse_into_a_repeated_child():
    fan = ("batch", "mesh1.compute.0a0b0c", "CONSUMER", {}, [
        ("send part", "mesh1.compute.0a0b0c", "PRODUCER", {}, []) for _ in range(3)])
    children = normalise(Trace(build(fan)))["children"]
    assert children == [{"name": "send part", "service": "mesh1.compute.*", "kind": "PRODUCER", "repeated": True}]


@pytest.fixture
def gate(tmp_path):
    def make(update=False, ci=False):
        return SnapshotGate(tmp_path / "test_mod.py", "test_it[1]", update=update, ci=ci)
    return make


def test_update_writes_next_to_the_test_then_the_same_shape_passes(gate, tmp_path):
    trace = Trace(build(cross_mesh_tree()))
    path = gate(update=True)(trace)
    assert path == tmp_path / "__trace_snapshots__" / "test_mod.test_it[1].yaml"
    assert path.read_text().startswith("# trace shape snapshot of test_it[1]")
    assert gate()(Trace(build(cross_mesh_tree("mesh2.broker.abcdef")))) == path
    assert gate().path("second") == tmp_path / "__trace_snapshots__" / "test_mod.test_it[1].second.yaml"


def test_a_different_shape_fails_with_the_diff_and_how_to_update(gate):
    gate(update=True)(Trace(build(cross_mesh_tree())))
    renamed = cross_mesh_tree()
    renamed[4][0][4][0] = ("resolve mesh2.registry",) + renamed[4][0][4][0][1:]
    with pytest.raises(AssertionError) as info:
        gate()(Trace(build(renamed)))
    message = str(info.value)
    assert "differs from its snapshot" in message and "--trace-snapshot-update" in message
    assert ">>" in message and "resolve mesh2.registry" in message


def test_a_span_that_turns_to_error_is_a_change(gate):
    gate(update=True)(Trace(build(cross_mesh_tree())))
    with pytest.raises(AssertionError, match="status: expected UNSET, got ERROR"):
        gate()(Trace(build(cross_mesh_tree(), status={"receive orders": "ERROR"})))


def test_a_missing_snapshot_is_written_locally_with_a_warning_but_fails_in_ci(gate):
    trace = Trace(build(cross_mesh_tree()))
    with pytest.raises(AssertionError, match="no trace snapshot .* CI is set"):
        gate(ci=True)(trace)
    assert not gate().path().exists()
    with pytest.warns(pytest.PytestWarning, match="wrote a new trace snapshot"):
        gate()(trace)
    assert gate().path().exists()


def test_jaeger_json_has_the_fields_jaeger_ui_reads(tmp_path):
    trace = Trace(build(cross_mesh_tree()))
    doc = to_jaeger(trace)
    [data] = doc["data"]
    assert data["traceID"] == trace.trace_id and len(data["spans"]) == 5
    by_name = {s["operationName"]: s for s in data["spans"]}
    root, receive, send = by_name["produce orders"], by_name["receive orders"], by_name["send orders"]
    assert root["references"] == []
    assert receive["references"] == [{"refType": "CHILD_OF", "traceID": trace.trace_id, "spanID": send["spanID"]}]
    span = trace.one(name="receive orders")
    assert receive["startTime"] == span.start_ns // 1000 and receive["duration"] == span.duration_ns // 1000
    assert {"key": "messaging.destination.name", "type": "string", "value": "orders"} in receive["tags"]
    assert {"key": "span.kind", "type": "string", "value": "consumer"} in receive["tags"]
    assert data["processes"][receive["processID"]] == {"serviceName": "mesh2.broker.61182f", "tags": []}
    assert len(data["processes"]) == 3

    text, jaeger = write_trace(trace, "why it failed", tmp_path)
    assert json.loads(jaeger.read_text()) == doc
    assert text.read_text().startswith("why it failed")
    assert "· messaging.destination.name = 'orders'" in text.read_text()
