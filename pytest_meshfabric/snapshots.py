"""Trace-shape snapshots: a CI gate on the structure of traces, not on their timing.

A snapshot is a shape file (see :mod:`pytest_meshfabric.shapes`) written next to the test,
in ``__trace_snapshots__/<module>.<test>[.<name>].yaml``, from a *normalised* trace: span
names, masked services (``mesh1.broker.239dc9`` → ``mesh1.broker.*``), kinds, error
statuses and the child order; no ids, timestamps, durations or attributes. Runs of identical
siblings collapse into one child marked ``repeated``.

* ``pytest --trace-snapshot-update`` (re)writes snapshots;
* otherwise a trace whose shape differs from its snapshot fails with the tree diff;
* a missing snapshot is written (with a warning), except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import artifacts
from .shapes import Shape, match
from .traces import SpanNode, Trace

__all__ = ["SnapshotGate", "in_ci", "mask_service", "normalise"]

SNAPSHOT_DIR = "__trace_snapshots__"
_NODE_SUFFIX = re.compile(r"\.[0-9a-f]{6}$")


def mask_service(name: str) -> str:
    """Mask a node-id suffix: ``mesh1.broker.239dc9`` → ``mesh1.broker.*``, ``client.3fa2b1`` → ``client.*``."""
    return _NODE_SUFFIX.sub(".*", name)


def _node_shape(node: SpanNode) -> dict[str, Any]:
    span = node.span
    shape: dict[str, Any] = {"name": span.name, "service": mask_service(span.service_name), "kind": span.kind}
    if span.status != "UNSET":
        shape["status"] = span.status
    children = _collapse([_node_shape(c) for c in node.children])
    if children:
        shape["children"] = children
    return shape


def _collapse(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for child in children:
        if out and {k: v for k, v in out[-1].items() if k != "repeated"} == child:
            out[-1]["repeated"] = True
        else:
            out.append(child)
    return out


def normalise(trace: Trace) -> dict[str, Any]:
    """The trace's shape as plain data (``ValueError`` if it has no single root)."""
    return _node_shape(trace.tree)


def _strict_status(shape: Shape) -> Shape:
    """A snapshot without a status means UNSET: a span that starts failing is a change."""
    shape.status = shape.status or "UNSET"
    for child in shape.children:
        _strict_status(child)
    return shape


def in_ci() -> bool:
    """True when the ``CI`` variable is set (and not ``0`` / ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class SnapshotGate:
    """Compares traces to the snapshots of one test (the ``trace_snapshot`` fixture)."""

    def __init__(self, test_file: Path, test_name: str, *, update: bool, ci: bool | None = None) -> None:
        self.directory = Path(test_file).parent / SNAPSHOT_DIR
        self.stem = artifacts.safe_name(f"{Path(test_file).stem}.{test_name}")
        self.test_name = test_name
        self.update = update
        self.ci = in_ci() if ci is None else ci

    def path(self, name: str | None = None) -> Path:
        """Where the snapshot ``name`` (default: the test's only one) lives."""
        return self.directory / (f"{self.stem}.{artifacts.safe_name(name)}.yaml" if name else f"{self.stem}.yaml")

    def __call__(self, trace: Trace, name: str | None = None) -> Path:
        """Compare ``trace`` with its snapshot (or write it, see the module docstring)."""
        return self.check(trace, name)

    def check(self, trace: Trace, name: str | None = None) -> Path:
        path = self.path(name)
        if self.update:
            return self._write(path, trace)
        if not path.exists():
            if self.ci:
                raise AssertionError(f"no trace snapshot at {path}, and CI is set, so none is created here; run "
                                     f"`pytest --trace-snapshot-update` locally and commit {self.directory.name}/")
            warnings.warn(pytest.PytestWarning(f"wrote a new trace snapshot {path}; commit it"), stacklevel=2)
            return self._write(path, trace)
        result = match(_strict_status(Shape.load(path)), trace)
        explanation = None
        if not result:
            explanation = (f"the shape of the trace differs from its snapshot {path}\n(if the change is intended, "
                           f"update it with `pytest --trace-snapshot-update`)\n\n{result.explain()}")
        artifacts.note(trace, explanation, key=("snapshot", str(path)))
        if explanation:
            raise AssertionError(explanation)
        return path

    def _write(self, path: Path, trace: Trace) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = yaml.safe_dump(normalise(trace), sort_keys=False, default_flow_style=False, allow_unicode=True)
        path.write_text(f"# trace shape snapshot of {self.test_name}; update with pytest --trace-snapshot-update\n"
                        + body)
        return path
