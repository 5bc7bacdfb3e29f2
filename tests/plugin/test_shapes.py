"""Unit tests of shape specs and their matching: the diff must point at the first real difference."""

from __future__ import annotations

import copy

import pytest

from fabric.errors import ConfigError
from pytest_meshfabric import Shape, Trace, match
from tests.plugin.builders import CROSS_MESH_SHAPE, build, cross_mesh_trace


def shape(**changes):
    """CROSS_MESH_SHAPE with the gateway's children replaced or extra keys set on it."""
    spec = copy.deepcopy(CROSS_MESH_SHAPE)
    spec["children"][0].update(changes)
    return spec


def marked_line(result) -> str:
    return next(line for line in result.explain().splitlines() if line.startswith(">>"))


def test_the_right_shape_matches_from_python_yaml_text_and_a_file(tmp_path):
    trace = cross_mesh_trace()
    assert match(CROSS_MESH_SHAPE, trace)
    yaml_text = Shape.parse(CROSS_MESH_SHAPE).to_yaml()
    assert match(yaml_text, trace)
    (tmp_path / "cross.yaml").write_text(yaml_text)
    assert match(str(tmp_path / "cross.yaml"), trace)
    assert match(tmp_path / "cross.yaml", trace)
    assert trace == CROSS_MESH_SHAPE and CROSS_MESH_SHAPE == trace


def test_a_wrong_name_is_the_first_mismatch_and_the_rest_still_lines_up():
    wrong = shape(children=[{"name": "resolve mesh3.broker"}, {"name": "send orders"}])
    result = match(wrong, cross_mesh_trace())
    assert not result
    assert result.first_mismatch.problems == ["name: expected 'resolve mesh3.broker', got 'resolve mesh2.broker'"]
    line = marked_line(result)
    assert "resolve mesh3.broker" in line.split("|")[0] and "resolve mesh2.broker" in line.split("|")[1]
    explanation = result.explain()
    assert explanation.count(">>") == 1
    assert "send orders" in explanation.split(">>")[1]  # the rows after the mismatch are still paired
    assert "expected" in explanation.splitlines()[2] and "actual" in explanation.splitlines()[2]


def test_missing_and_unexpected_children_are_reported_as_such():
    missing = shape(children=[{"name": "resolve mesh2.broker"}, {"name": "authorize"}, {"name": "send orders"}])
    result = match(missing, cross_mesh_trace())
    assert result.first_mismatch.expected == "authorize"
    assert result.first_mismatch.actual is None
    assert "missing" in result.first_mismatch.problems[0]

    unexpected = shape(children=[{"name": "send orders", "children": [{"name": "receive orders"}]}])
    result = match(unexpected, cross_mesh_trace())
    assert result.first_mismatch.expected is None
    assert result.first_mismatch.actual.startswith("resolve mesh2.broker")
    assert result.first_mismatch.problems == ["unexpected span (not in the shape)"]
    assert match(shape(allow_extra=True, children=unexpected["children"][0]["children"]), cross_mesh_trace())


def test_optional_repeated_and_unordered_children():
    trace = cross_mesh_trace()
    gateway_children = CROSS_MESH_SHAPE["children"][0]["children"]
    optional = [{"name": "authorize", "optional": True}, *gateway_children]
    assert match(shape(children=optional), trace)
    reversed_children = list(reversed(gateway_children))
    assert not match(shape(children=reversed_children), trace)
    assert match(shape(children=reversed_children, ordered=False), trace)

    fan_out = ("batch", "mesh1.compute.0a0b0c", "CONSUMER", {}, [
        ("send part", "mesh1.compute.0a0b0c", "PRODUCER", {}, []) for _ in range(3)])
    fan_trace = Trace(build(fan_out))
    assert match({"name": "batch", "children": [{"name": "send part", "repeated": True}]}, fan_trace)
    assert not match({"name": "batch", "children": ["send part"]}, fan_trace)
    assert match({"name": "batch", "children": ["send part", {"name": "send part", "repeated": True,
                                                              "optional": True}]}, fan_trace)


def test_attributes_kind_service_and_status_are_checked():
    trace = cross_mesh_trace()
    bad = copy.deepcopy(CROSS_MESH_SHAPE)
    receive = bad["children"][0]["children"][1]["children"][0]
    receive["attributes"] = {"messaging.destination.name": "payments", "messaging.system": "meshfabric"}
    receive["service"] = "mesh3.broker.*"
    receive["status"] = "ERROR"
    problems = match(bad, trace).first_mismatch.problems
    assert problems == [
        "service: expected 'mesh3.broker.*', got 'mesh2.broker.61182f'",
        "status: expected ERROR, got UNSET",
        "attribute 'messaging.destination.name': expected 'payments', got 'orders'",
        "attribute 'messaging.system' is missing",
    ]
    receive.update(attributes={"messaging.destination.name": "ord*"}, service="mesh2.*", status="UNSET")
    assert match(bad, trace)


def test_a_trace_without_a_single_root_never_matches():
    spans = [s for s in cross_mesh_trace().spans if s.name != "produce"]
    result = match(CROSS_MESH_SHAPE, Trace(spans))
    assert not result
    assert "no single connected root" in result.first_mismatch.problems[0]


@pytest.mark.parametrize("spec, message", [
    ({"name": "x", "childern": []}, "unknown key(s) 'childern' (did you mean 'children'?)"),
    ({"name": "x", "kind": "SERVERS"}, "kind 'SERVERS' is not one of"),
    ({"name": "x", "children": {"name": "y"}}, "children must be a list"),
    ({"name": "x", "children": [{"name": "y", "attributes": ["a"]}]}, "x > child 1: attributes must be a mapping"),
    (42, "a trace shape is a dict"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ConfigError) as info:
        Shape.parse(spec)
    assert message in str(info.value)


def test_a_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        Shape.load(path)


def test_to_dict_round_trips_and_leaves_defaults_out():
    parsed = Shape.parse(CROSS_MESH_SHAPE)
    assert Shape.from_dict(parsed.to_dict()) == parsed
    assert "ordered" not in parsed.to_dict()
    assert Shape.from_dict({"name": "x", "optional": True, "repeated": True}).label() == "x *"
