"""The produce breakdown reads segments from two nodes' spans and skips what it cannot use."""

from __future__ import annotations

from bench.breakdown import SEGMENTS, breakdown


def span(trace: str, name: str, start_us: float, end_us: float, **attributes) -> dict:
    return {"trace_id": trace, "name": name, "start_ns": int(start_us * 1e3), "end_ns": int(end_us * 1e3),
            "attributes": attributes}


def produce(trace: str, offset: float) -> list[dict]:
    at = lambda us: offset + us  # noqa: E731
    return [span(trace, "writer.produce", at(0), at(1000)), span(trace, "resolve mesh2.broker", at(5), at(15)),
            span(trace, "send bench", at(20), at(990)), span(trace, "receive bench", at(400), at(620))]


def test_segments_are_medians_of_the_gaps_between_spans():
    spans = produce("a", 0) + produce("b", 5000)
    rows, used = breakdown(spans, "bench")
    assert used == 2
    got = dict(rows)
    assert [label for label, _ in rows] == [label for label, _, _ in SEGMENTS]
    assert got["gateway: writer starts -> send starts (resolve, spans)"] == 20
    assert got["request: send starts -> broker's receive starts (framing, transport, dispatch)"] == 380
    assert got["broker: receive (checks, write, group commit, fsync)"] == 220
    assert got["reply: receive ends -> send ends (framing, transport, wake-up)"] == 370
    assert got["whole produce (writer span)"] == 1000


def test_incomplete_and_batched_traces_are_skipped():
    partial = [s for s in produce("p", 0) if s["name"] != "receive bench"]  # the broker's ring lost it
    batched = produce("q", 0)
    batched[2]["attributes"]["messaging.batch.message_count"] = 32
    batched[3]["attributes"]["messaging.batch.message_count"] = 32
    assert breakdown(partial + batched, "bench") == ([], 0)
    assert breakdown(produce("r", 0), "other-topic") == ([], 0)
