"""What a failing trace assertion leaves behind: the trace as a text tree and as Jaeger JSON.

Trace assertions (``assert_stitched``, shape matches, snapshot gates) *note* their failures
here while a test runs and forget them when a later check of the same trace passes. When the
test fails, the plugin writes every noted trace into the artifacts folder:

* ``<test>/<trace id>.txt``  why it failed, then the tree with every attribute;
* ``<test>/<trace id>.json`` the trace in Jaeger's JSON format (Jaeger UI: "Search" →
  "JSON File"), ``{"data": [{"traceID", "spans", "processes"}]}``.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .traces import Trace

#: At most this many failures are remembered per test (a wait loop may note many).
MAX_NOTED = 20
_noted: OrderedDict[tuple[Any, ...], tuple[Trace, str]] = OrderedDict()


def begin_test() -> None:
    """Forget what earlier tests noted."""
    _noted.clear()


def note(trace: Trace, explanation: str | None, key: tuple[Any, ...]) -> None:
    """Remember a failed check of ``trace`` (``explanation``), or forget it when it passed (``None``)."""
    full_key = (tuple(sorted(trace.trace_ids)), *key)
    _noted.pop(full_key, None)
    if explanation is not None:
        _noted[full_key] = (trace, explanation)
        while len(_noted) > MAX_NOTED:
            _noted.popitem(last=False)


def noted() -> list[tuple[Trace, str]]:
    """The failed trace checks of the current test, oldest first."""
    return list(_noted.values())


def safe_name(text: str) -> str:
    """``text`` as a file name: anything but letters, digits, ``._-[]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._\-\[\]]+", "_", text).strip("_")[:150] or "unnamed"


def _tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    return {"key": key, "type": "string", "value": json.dumps(value, default=str)}


def to_jaeger(trace: Trace) -> dict[str, Any]:
    """The trace in Jaeger's JSON format (what its UI loads and its query API returns)."""
    processes: dict[str, dict[str, Any]] = {}
    process_ids: dict[str, str] = {}
    spans = []
    for span in trace.spans:
        service = span.service_name or "unknown"
        if service not in process_ids:
            process_ids[service] = f"p{len(process_ids) + 1}"
            tags = [_tag(k, v) for k, v in sorted(span.resource.items()) if k != "service.name"]
            processes[process_ids[service]] = {"serviceName": service, "tags": tags}
        references = []
        if span.parent_span_id:
            references.append({"refType": "CHILD_OF", "traceID": span.trace_id, "spanID": span.parent_span_id})
        references += [{"refType": "FOLLOWS_FROM", "traceID": t, "spanID": s} for t, s in span.links]
        tags = [_tag(k, v) for k, v in sorted(span.attributes.items())]
        tags.append(_tag("span.kind", span.kind.lower()))
        if span.status != "UNSET":
            tags.append(_tag("otel.status_code", span.status))
        if span.status == "ERROR":
            tags += [_tag("error", True), _tag("otel.status_description", span.status_message)]
        spans.append({
            "traceID": span.trace_id, "spanID": span.span_id, "operationName": span.name,
            "references": references, "startTime": span.start_ns // 1000,
            "duration": max(0, span.duration_ns // 1000), "tags": tags,
            "logs": [{"timestamp": span.start_ns // 1000, "fields": [_tag("event", name)] +
                      [_tag(k, v) for k, v in attrs.items()]} for name, attrs in span.events],
            "processID": process_ids[service], "warnings": None, "flags": 1,
        })
    trace_id = sorted(trace.trace_ids)[0] if trace.trace_ids else ""
    return {"data": [{"traceID": trace_id, "spans": spans, "processes": processes, "warnings": None}]}


def write_trace(trace: Trace, explanation: str, directory: Path) -> list[Path]:
    """Write ``trace`` as ``<id>.txt`` (explanation + tree) and ``<id>.json`` (Jaeger) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = safe_name("-".join(sorted(trace.trace_ids)) or "empty-trace")
    text = directory / f"{stem}.txt"
    text.write_text(f"{explanation}\n\n{trace.render(attributes=True)}\n")
    jaeger = directory / f"{stem}.json"
    jaeger.write_text(json.dumps(to_jaeger(trace), indent=1))
    return [text, jaeger]


def write_noted(directory: Path) -> list[Path]:
    """Write every noted failure of the current test; return the files written."""
    return [path for trace, explanation in noted() for path in write_trace(trace, explanation, directory)]
