"""Expected trace shapes as data, matched against real traces with a side-by-side diff.

A shape is a nested mapping (Python or YAML); every key is optional::

    name: produce orders          # span name, exact or glob
    service: client.*             # service.name glob
    kind: PRODUCER                # INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER
    status: ERROR                 # UNSET, OK, ERROR
    attributes: {messaging.destination.name: orders}   # these must be present and equal (globs for strings)
    ordered: true                 # children in start-time order (default); false: any order
    allow_extra: false            # other children are mismatches (default); true: tolerated
    children:
      - name: produce             # a child: same keys, plus
        optional: true            #   may be absent
        repeated: true            #   may occur several times in a row
      - resolve mesh2.broker      # a bare string: a child with just this name

``match(shape, trace)`` aligns children like a diff (a child can be missing, unexpected, or
paired and different), so the failure points at the first real difference, not at
everything after it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import yaml

from fabric.errors import ConfigError

from .spanstore import CapturedSpan
from .traces import SpanNode, Trace, describe_span, glob_match

__all__ = ["MatchResult", "Row", "Shape", "ShapeLike", "match"]

KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER", "UNSPECIFIED")
STATUSES = ("UNSET", "OK", "ERROR")
KEYS = ("name", "service", "kind", "status", "attributes", "children", "ordered", "allow_extra", "optional",
        "repeated")
#: Widest expected-tree column in a diff.
MAX_COLUMN = 64


@dataclass(eq=True)
class Shape:
    """One node of an expected trace tree (see the module docstring for the keys)."""

    name: str | None = None
    service: str | None = None
    kind: str | None = None
    status: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    children: list[Shape] = field(default_factory=list)
    ordered: bool = True
    allow_extra: bool = False
    optional: bool = False
    repeated: bool = False

    @classmethod
    def parse(cls, spec: ShapeLike) -> Shape:
        """A Shape from a Shape, a mapping, YAML text, or a path to a ``.yaml`` file."""
        if isinstance(spec, Shape):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith((".yaml", ".yml"))):
            return cls.load(spec)
        if isinstance(spec, str):
            return cls.from_dict(yaml.safe_load(spec), "the YAML text")
        raise ConfigError(f"a trace shape is a dict, YAML text, a .yaml path or a Shape, not {type(spec).__name__}")

    @classmethod
    def load(cls, path: str | Path) -> Shape:
        """Read a shape from a YAML file."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the trace shape file {path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"the trace shape file {path} is not valid YAML: {exc}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "the shape") -> Shape:
        """Build and check a shape; a typo in a key is answered with the keys that exist."""
        if isinstance(data, str):
            return cls(name=data)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a shape node is a mapping (or a bare span name), not {data!r}")
        unknown = [k for k in data if k not in KEYS]
        if unknown:
            hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(str(k), KEYS, 1))
                     else repr(k) for k in unknown]
            raise ConfigError(f"{where}: unknown key(s) {', '.join(hints)}; a shape node takes {', '.join(KEYS)}")
        for key, allowed in (("kind", KINDS), ("status", STATUSES)):
            if data.get(key) is not None and data[key] not in allowed:
                raise ConfigError(f"{where}: {key} {data[key]!r} is not one of {', '.join(allowed)}")
        if not isinstance(data.get("attributes", {}), Mapping):
            raise ConfigError(f"{where}: attributes must be a mapping of attribute name to value")
        children = data.get("children", [])
        if not isinstance(children, list):
            raise ConfigError(f"{where}: children must be a list of shape nodes")
        label = data.get("name", "?")
        return cls(
            name=data.get("name"), service=data.get("service"), kind=data.get("kind"), status=data.get("status"),
            attributes=dict(data.get("attributes", {})),
            children=[cls.from_dict(c, f"{where} > {label} > child {i + 1}") for i, c in enumerate(children)],
            ordered=bool(data.get("ordered", True)), allow_extra=bool(data.get("allow_extra", False)),
            optional=bool(data.get("optional", False)), repeated=bool(data.get("repeated", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The shape as plain data, defaults left out (what snapshots store)."""
        out: dict[str, Any] = {}
        for key in ("name", "service", "kind", "status"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        for key, default in (("ordered", True), ("allow_extra", False), ("optional", False), ("repeated", False)):
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True)

    @cached_property
    def key(self) -> str:
        """A stable identity of the shape's content."""
        return self.to_yaml()

    def label(self) -> str:
        """``name [service] KIND {attributes}`` with ``?`` / ``+`` / ``*`` for optional / repeated."""
        text = self.name or "*"
        if self.service:
            text += f" [{self.service}]"
        for extra in (self.kind, self.status):
            text += f" {extra}" if extra else ""
        if self.attributes:
            text += f" {self.attributes}"
        return text + {(False, False): "", (True, False): " ?", (False, True): " +", (True, True): " *"}[
            (self.optional, self.repeated)]

    def size(self) -> int:
        return 1 + sum(c.size() for c in self.children)

    def problems(self, span: CapturedSpan) -> list[str]:
        """How ``span`` itself (not its children) differs from this node."""
        found = []
        if self.name is not None and not glob_match(span.name, self.name):
            found.append(f"name: expected {self.name!r}, got {span.name!r}")
        if self.service is not None and not glob_match(span.service_name, self.service):
            found.append(f"service: expected {self.service!r}, got {span.service_name!r}")
        if self.kind is not None and span.kind != self.kind:
            found.append(f"kind: expected {self.kind}, got {span.kind}")
        if self.status is not None and span.status != self.status:
            found.append(f"status: expected {self.status}, got {span.status}")
        for key, want in self.attributes.items():
            if key not in span.attributes:
                found.append(f"attribute {key!r} is missing")
            elif not _value_matches(span.attributes[key], want):
                found.append(f"attribute {key!r}: expected {want!r}, got {span.attributes[key]!r}")
        return found


ShapeLike = Union[Shape, Mapping[str, Any], str, Path]


def _value_matches(got: Any, want: Any) -> bool:
    if isinstance(want, str) and isinstance(got, str):
        return glob_match(got, want)
    return bool(got == want)


@dataclass
class Row:
    """One line of the side-by-side diff: an expected node, an actual span, or both."""

    depth: int
    expected: str | None
    actual: str | None
    problems: list[str] = field(default_factory=list)


@dataclass
class MatchResult:
    """The outcome of :func:`match`: truthy when the trace has the shape."""

    ok: bool
    rows: list[Row]
    shape: Shape
    trace: Trace

    def __bool__(self) -> bool:
        return self.ok

    @property
    def first_mismatch(self) -> Row | None:
        return next((r for r in self.rows if r.problems), None)

    def explain(self) -> str:
        """Expected tree and actual tree side by side, the first mismatch marked ``>>``."""
        if self.ok:
            return "the trace matches the shape"
        first = self.first_mismatch
        ids = ",".join(sorted(self.trace.trace_ids)) or "(empty)"
        head = f"trace {ids} does not match the expected shape"
        if first is not None:
            head += f"; first mismatch: {first.expected or first.actual}: {first.problems[0]}"
        cells = [("    " * r.depth + r.expected if r.expected else "", "    " * r.depth + r.actual if r.actual else "")
                 for r in self.rows]
        width = min(MAX_COLUMN, max([len("expected")] + [len(left) for left, _ in cells]))
        lines = [head, "", f"   {'expected'.ljust(width)} | actual"]
        for row, (left, right) in zip(self.rows, cells, strict=True):
            mark = ">>" if row is first else " x" if row.problems else "  "
            left = left if len(left) <= width else left[: width - 1] + "…"
            lines.append(f"{mark} {(left or '-').ljust(width)} | {right or '-'}".rstrip())
            lines += [f"   {' ' * width} |   ^ {p}" for p in row.problems]
        return "\n".join(lines)

    def __repr__(self) -> str:
        first = self.first_mismatch
        if self.ok or first is None:
            return f"<MatchResult ok={self.ok}>"
        return f"<MatchResult: no match at {first.expected or first.actual!r}: {first.problems[0]}>"


def match(spec: ShapeLike, trace: Trace) -> MatchResult:
    """Match ``trace`` against ``spec``; the result explains any difference."""
    shape = Shape.parse(spec)
    roots = [n for n in trace.forest if n.span.parent_span_id is None]
    if len(roots) != 1 or trace.orphans:
        actual = f"<{len(roots)} root span(s), {len(trace.orphans)} orphan(s)>"
        rows = [Row(0, shape.label(), actual, [f"the trace has no single connected root:\n{trace.render()}"])]
        return MatchResult(False, rows, shape, trace)
    cost, rows = _Matcher().node(shape, roots[0], 0)
    return MatchResult(cost == 0, rows, shape, trace)


Alignment = tuple[int, list[Row]]


class _Matcher:
    """A small tree diff: children are aligned by dynamic programming.

    Costs: a paired node that differs 1, a missing shape node or an unexpected span 1 per node
    of its subtree; the cheapest alignment wins, so a renamed span shows as *changed*, not as
    one missing plus one unexpected.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[int, str, int], Alignment] = {}

    def node(self, shape: Shape, node: SpanNode, depth: int) -> Alignment:
        key = (id(shape), node.span.span_id, depth)
        if key not in self._memo:
            problems = shape.problems(node.span)
            cost, rows = self.children(shape, node.children, depth + 1)
            own = Row(depth, shape.label(), describe_span(node.span, shape.attributes), problems)
            self._memo[key] = ((1 if problems else 0) + cost, [own, *rows])  # a differing node costs 1
        return self._memo[key]

    def children(self, parent: Shape, nodes: list[SpanNode], depth: int) -> Alignment:
        shapes = parent.children
        if not parent.ordered:
            nodes = self._in_shape_order(shapes, nodes, depth)
        best: dict[tuple[int, int, bool], Alignment] = {}

        def solve(i: int, j: int, used: bool) -> Alignment:
            """Best alignment of shapes[i:] and nodes[j:]; ``used``: shapes[i] matched already."""
            if (i, j, used) in best:
                return best[(i, j, used)]
            if i == len(shapes):
                rows = [r for n in nodes[j:] for r in _extra(n, depth, parent.allow_extra)]
                result = (0 if parent.allow_extra else sum(n.size() for n in nodes[j:]), rows)
            else:
                shape = shapes[i]
                options = []  # on equal cost the first wins: pairing a span with a node comes first
                if j < len(nodes):
                    pair_cost, pair_rows = self.node(shape, nodes[j], depth)
                    rest_cost, rest_rows = solve(i, j + 1, True) if shape.repeated else solve(i + 1, j + 1, False)
                    options.append((pair_cost + rest_cost, pair_rows + rest_rows))
                cost, rows = solve(i + 1, j, False)
                if used or shape.optional:
                    options.append((cost, rows))
                else:
                    options.append((cost + shape.size(), _missing(shape, depth) + rows))
                if j < len(nodes):
                    skip_cost, skip_rows = solve(i, j + 1, used)
                    extra_cost = 0 if parent.allow_extra else nodes[j].size()
                    options.append((extra_cost + skip_cost, _extra(nodes[j], depth, parent.allow_extra) + skip_rows))
                result = min(options, key=lambda option: option[0])
            best[(i, j, used)] = result
            return result

        return solve(0, 0, False)

    def _in_shape_order(self, shapes: list[Shape], nodes: list[SpanNode], depth: int) -> list[SpanNode]:
        """For unordered children: put the spans that match each shape child first, in its order."""
        left, ordered = list(nodes), []
        for shape in shapes:
            fits = [n for n in left if self.node(shape, n, depth)[0] == 0]
            for n in fits if shape.repeated else fits[:1]:
                left.remove(n)
                ordered.append(n)
        return ordered + left


def _missing(shape: Shape, depth: int) -> list[Row]:
    rows = [Row(depth, shape.label(), None, ["missing: no span matches this node"])]
    for child in shape.children:
        rows += [Row(r.depth, r.expected, None) for r in _missing(child, depth + 1)]
    return rows


def _extra(node: SpanNode, depth: int, allowed: bool) -> list[Row]:
    rows = []
    for offset, sub in node.walk():
        problems = [] if allowed or offset else ["unexpected span (not in the shape)"]
        rows.append(Row(depth + offset, None, describe_span(sub.span), problems))
    return rows
