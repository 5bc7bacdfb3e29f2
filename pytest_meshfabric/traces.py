"""Traces as trees: group captured spans, find traces, walk them, check that they stitch.

::

    trace = find_traces(spans, root="produce orders", service="mesh2.broker.*")[0]
    for depth, span in trace.walk():
        print("  " * depth + span.name)
    assert_stitched(trace, meshes=["mesh1", "mesh2"])
    assert trace.matches({"name": "produce orders", "children": [...]})   # see shapes.py

A ``Trace`` compares equal to a shape spec it matches, so ``assert trace == spec`` works too,
and the plugin's ``pytest_assertrepr_compare`` then prints the expected and actual trees
side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import artifacts
from .spanstore import CapturedSpan, glob_match, span_matches

if TYPE_CHECKING:
    from .shapes import MatchResult, ShapeLike

__all__ = ["SpanNode", "Trace", "assert_stitched", "find_traces", "glob_match"]


def describe_span(span: CapturedSpan, keys: Iterable[str] = ()) -> str:
    """``name [service] KIND`` plus the attributes named in ``keys``; a row of a tree."""
    text = f"{span.name} [{span.service_name or '?'}] {span.kind}"
    if span.status == "ERROR":
        text += " ERROR"
    shown = {k: span.attributes[k] for k in keys if k in span.attributes}
    return text + (f" {shown}" if shown else "")


@dataclass
class SpanNode:
    """A span and its children (sorted by start time)."""

    span: CapturedSpan
    children: list[SpanNode] = field(default_factory=list)

    def walk(self, depth: int = 0) -> Iterator[tuple[int, SpanNode]]:
        """Depth-first, parents before children: ``(depth, node)`` pairs."""
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)

    def size(self) -> int:
        return sum(1 for _ in self.walk())


class Trace:
    """The spans of one trace (or, when built from mixed spans, whatever was given)."""

    def __init__(self, spans: Iterable[CapturedSpan]) -> None:
        self.spans = sorted(spans, key=lambda s: (s.start_ns, s.name))
        self.by_id = {s.span_id: s for s in self.spans}
        nodes = {s.span_id: SpanNode(s) for s in self.spans}
        self.forest: list[SpanNode] = []  # roots, and orphans (whose parent is missing)
        for span in self.spans:
            parent = nodes.get(span.parent_span_id or "")
            (parent.children if parent else self.forest).append(nodes[span.span_id])

    # -- identity --

    @property
    def trace_ids(self) -> set[str]:
        return {s.trace_id for s in self.spans}

    @property
    def trace_id(self) -> str:
        """The trace id (``ValueError`` if the spans belong to several traces)."""
        ids = self.trace_ids
        if len(ids) != 1:
            raise ValueError(f"these spans belong to {len(ids)} traces, not one: {sorted(ids)}")
        return next(iter(ids))

    @property
    def roots(self) -> list[CapturedSpan]:
        return [s for s in self.spans if s.parent_span_id is None]

    @property
    def orphans(self) -> list[CapturedSpan]:
        """Spans whose parent is not among the spans."""
        return [s for s in self.spans if s.parent_span_id is not None and s.parent_span_id not in self.by_id]

    @property
    def root(self) -> CapturedSpan | None:
        """The root span, if there is exactly one."""
        roots = self.roots
        return roots[0] if len(roots) == 1 else None

    @property
    def tree(self) -> SpanNode:
        """The root's node (``ValueError`` when the trace has no single root)."""
        roots = [n for n in self.forest if n.span.parent_span_id is None]
        if len(roots) != 1:
            raise ValueError(f"the trace has {len(roots)} root spans, not one; {self.render()}")
        return roots[0]

    # -- reading --

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[CapturedSpan]:
        return iter(self.spans)

    def walk(self) -> Iterator[tuple[int, CapturedSpan]]:
        """Every span depth-first, parents first: ``(depth, span)`` (orphans as extra roots)."""
        for top in self.forest:
            for depth, node in top.walk():
                yield depth, node.span

    def children(self, span: CapturedSpan) -> list[CapturedSpan]:
        """The direct children of ``span``, by start time."""
        return [s for s in self.spans if s.parent_span_id == span.span_id]

    def find(self, name: str | None = None, service: str | None = None, **attributes: Any) -> list[CapturedSpan]:
        """Spans of this trace by name and service (globs) and attribute values."""
        return [s for s in self.spans if span_matches(s, name, service, None, attributes)]

    def one(self, name: str | None = None, service: str | None = None, **attributes: Any) -> CapturedSpan:
        """The single span matching :meth:`find` (``AssertionError`` naming what was there otherwise)."""
        found = self.find(name, service, **attributes)
        if len(found) != 1:
            raise AssertionError(f"expected one span with name={name!r} service={service!r} {attributes or ''}, "
                                 f"found {len(found)} in:\n{self.render()}")
        return found[0]

    @property
    def services(self) -> set[str]:
        return {s.service_name for s in self.spans}

    @property
    def meshes(self) -> set[str]:
        """The ``mesh.id`` attributes of the spans (clients have none)."""
        return {str(s.attributes["mesh.id"]) for s in self.spans if s.attributes.get("mesh.id")}

    def render(self, attributes: bool = False) -> str:
        """The trace as an indented text tree (with every attribute when ``attributes``)."""
        ids = ", ".join(sorted(self.trace_ids)) or "(no spans)"
        lines = [f"trace {ids}: {len(self.spans)} span(s) from {len(self.services)} service(s)"]
        for depth, span in self.walk():
            orphan = " (ORPHAN: parent missing)" if span in self.orphans else ""
            ms = span.duration_ns / 1e6
            lines.append(f"{'    ' * depth}{describe_span(span)} {ms:.2f} ms{orphan}")
            if attributes:
                for key, value in sorted(span.attributes.items()):
                    lines.append(f"{'    ' * depth}    · {key} = {value!r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        root = self.root
        ids = ",".join(i[:8] for i in sorted(self.trace_ids))
        return f"<Trace {ids} root={root.name if root else None!r} {len(self.spans)} spans>"

    # -- shapes --

    def matches(self, spec: ShapeLike) -> MatchResult:
        """Match against a shape spec (dict, YAML text or file, or Shape); truthy when it matches."""
        from .shapes import match

        result = match(spec, self)
        artifacts.note(self, result.explain() if not result else None, key=("shape", result.shape.key))
        return result

    def shape(self) -> dict[str, Any]:
        """The trace's normalised shape (what ``--trace-snapshot-update`` writes)."""
        from .snapshots import normalise
        return normalise(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trace):
            return self.spans == other.spans
        from .shapes import Shape
        if isinstance(other, (Shape, dict)):
            return bool(self.matches(other))
        return NotImplemented

    __hash__ = object.__hash__


def find_traces(spans: Iterable[CapturedSpan], root: str | None = None, service: str | None = None,
                **attributes: Any) -> list[Trace]:
    """Traces among ``spans`` (oldest first) whose root is named ``root`` and that have a span of
    ``service`` and a span with every attribute in ``attributes`` (each criterion optional, globs ok)."""
    grouped: dict[str, list[CapturedSpan]] = {}
    for span in spans:
        grouped.setdefault(span.trace_id, []).append(span)
    found = []
    for members in grouped.values():
        if root is not None and not any(s.parent_span_id is None and glob_match(s.name, root) for s in members):
            continue
        if service is not None and not any(glob_match(s.service_name, service) for s in members):
            continue
        if attributes and not any(span_matches(s, None, None, None, attributes) for s in members):
            continue
        found.append(Trace(members))
    return sorted(found, key=lambda t: t.spans[0].start_ns)


def _is_async_handoff(parent: CapturedSpan, child: CapturedSpan) -> bool:
    """A consumer under a producer: the message waited, so the child may outlive its parent."""
    return parent.kind == "PRODUCER" and child.kind == "CONSUMER"


def stitching_problems(trace: Trace, services: Iterable[str] = (), meshes: Iterable[str] = ()) -> list[str]:
    """Everything that keeps ``trace`` from being one whole, well-nested trace (empty: stitched)."""
    problems = []
    if len(trace.trace_ids) != 1:
        problems.append(f"spans from {len(trace.trace_ids)} trace ids: {sorted(trace.trace_ids)}")
    if len(trace.roots) != 1:
        problems.append(f"{len(trace.roots)} root spans, not one: {[describe_span(s) for s in trace.roots]}")
    for orphan in trace.orphans:
        problems.append(f"parent {orphan.parent_span_id} of {describe_span(orphan)} is missing")
    for pattern in services:
        if not any(glob_match(s, pattern) for s in trace.services):
            problems.append(f"no span from a service matching {pattern!r} (services: {sorted(trace.services)})")
    missing_meshes = set(meshes) - trace.meshes
    if missing_meshes:
        problems.append(f"no span from mesh(es) {sorted(missing_meshes)} (meshes: {sorted(trace.meshes)})")
    for span in trace.spans:
        parent = trace.by_id.get(span.parent_span_id or "")
        if parent is None:
            continue
        if span.start_ns < parent.start_ns:
            problems.append(f"{describe_span(span)} starts before its parent {describe_span(parent)}")
        if span.end_ns > parent.end_ns and not _is_async_handoff(parent, span):
            problems.append(f"{describe_span(span)} ends after its parent {describe_span(parent)}")
    return problems


def assert_stitched(trace: Trace | Iterable[CapturedSpan], *, services: Iterable[str] = (),
                    meshes: Iterable[str] = ()) -> Trace:
    """Assert one trace id, one root, every parent present, children inside their parents'
    time (a CONSUMER under a PRODUCER may end later), and a span from each of ``services``
    (globs) and ``meshes``. Returns the trace; on failure the message shows the tree."""
    trace = trace if isinstance(trace, Trace) else Trace(trace)
    problems = stitching_problems(trace, services, meshes)
    explanation = None
    if problems:
        explanation = "the trace is not stitched end to end:\n" + "\n".join(f"  - {p}" for p in problems)
        explanation += "\n\n" + trace.render()
    artifacts.note(trace, explanation, key=("stitched",))
    if explanation:
        raise AssertionError(explanation)
    return trace
