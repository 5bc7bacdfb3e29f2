"""Where a cross-mesh produce's time goes, read from the spans the two nodes recorded.

The gateway and the broker run on one machine, so their span timestamps share a clock: the gap
between the gateway's ``send`` starting and the broker's ``receive`` starting is the request's
way through framing, the transport and the broker's dispatch, and so on. Each segment is the
median over sequential produces whose spans both nodes hold in their rings of recent spans
(``bench.produce`` reads the rings after every chunk of produces).
"""

from __future__ import annotations

import statistics
from typing import Any

# (label, (span, "start"|"end"), (span, "start"|"end")) for each segment, in the order a produce runs
SEGMENTS = [
    ("gateway: writer starts -> send starts (resolve, spans)", ("writer", "start"), ("send", "start")),
    ("request: send starts -> broker's receive starts (framing, transport, dispatch)", ("send", "start"),
     ("receive", "start")),
    ("broker: receive (checks, write, group commit, fsync)", ("receive", "start"), ("receive", "end")),
    ("reply: receive ends -> send ends (framing, transport, wake-up)", ("receive", "end"), ("send", "end")),
    ("gateway: send ends -> writer ends", ("send", "end"), ("writer", "end")),
    ("whole produce (writer span)", ("writer", "start"), ("writer", "end")),
]


def produce_traces(spans: list[dict[str, Any]], topic: str) -> list[dict[str, dict[str, Any]]]:
    """Single-record produces whose writer, send and receive spans are all there."""
    by_trace: dict[str, dict[str, dict[str, Any]]] = {}
    roles = {"writer.produce": "writer", f"send {topic}": "send", f"receive {topic}": "receive"}
    for span in spans:
        role = roles.get(span["name"])
        if role is not None and "messaging.batch.message_count" not in span["attributes"]:
            by_trace.setdefault(span["trace_id"], {})[role] = span
    return [t for t in by_trace.values() if len(t) == len(roles)]


def breakdown(spans: list[dict[str, Any]], topic: str) -> tuple[list[tuple[str, float]], int]:
    """``([(segment, p50 µs)], traces used)`` from the gateway's and the broker's spans."""
    traces = produce_traces(spans, topic)
    if not traces:
        return [], 0
    at = lambda t, where: t[where[0]][f"{where[1]}_ns"]  # noqa: E731
    rows = [(label, statistics.median(at(t, b) - at(t, a) for t in traces) / 1e3) for label, a, b in SEGMENTS]
    return rows, len(traces)
