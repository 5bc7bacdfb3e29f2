"""A span taken straight from the SDK (the console's own) is the span an OTLP receiver makes of
it: ``captured.from_sdk`` against the real OTLP encoder and ``fabric.otlp``'s decoder."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from fabric.captured import from_sdk
from fabric.identity import Identity, node_name
from fabric.otlp import decode_request
from fabric.telemetry import NodeLabels, Telemetry

NODE_ID = Identity.generate().node_id
LABELS = NodeLabels(name=node_name("mesh1", "console", NODE_ID), mesh="mesh1", type="console", node_id=NODE_ID)
ATTRIBUTES = {"text": "x", "flag": True, "count": 3, "ratio": 0.5, "words": ("a", "b"), "numbers": [1, 2],
              "flags": (True, False), "empty": ()}


def make_spans(tracer: trace.Tracer) -> None:
    """Every shape a node's span takes: root and children, each kind, attributes of every OTel
    type, events, a link, an error status with its message, an exception recorded."""
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes=ATTRIBUTES) as root:
        root.add_event("retry", {"attempt": 2, "error": "timed out"})
        link = Link(root.get_span_context())
        for kind in (SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
            with tracer.start_as_current_span(f"child {kind.name}", kind=kind, links=[link]):
                pass
        with pytest.raises(ValueError), tracer.start_as_current_span("failing") as failing:
            failing.set_status(Status(StatusCode.ERROR, "broker down"))  # the exception's wins
            raise ValueError("bad")
        with tracer.start_as_current_span("ok") as ok:
            ok.set_status(Status(StatusCode.OK))


def finished_spans(tracer_kind: str):
    exporter = InMemorySpanExporter()
    if tracer_kind == "lean":  # a node's own tracer, as the console's LocalTap sees its spans
        telemetry = Telemetry(LABELS, exporter=None)
        telemetry.provider.add_span_processor(SimpleSpanProcessor(exporter))
        make_spans(telemetry.tracer)
        telemetry.shutdown()
    else:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        make_spans(provider.get_tracer("test", schema_url=None))
        provider.shutdown()
    return exporter.get_finished_spans()


@pytest.mark.parametrize("tracer_kind", ["lean", "sdk"])
def test_from_sdk_is_what_the_otlp_round_trip_gives(tracer_kind):
    spans = finished_spans(tracer_kind)
    assert len(spans) == 7
    direct = [from_sdk(span) for span in spans]
    received = decode_request(encode_spans(spans))
    for mine, theirs in zip(direct, received, strict=True):
        assert mine.__dict__ == theirs.__dict__, mine.name
    by_name = {s.name: s for s in direct}
    assert by_name["root"].attributes["words"] == ["a", "b"] and by_name["root"].is_root
    assert by_name["failing"].status == "ERROR" and by_name["failing"].status_message == "ValueError: bad"
    assert by_name["child PRODUCER"].kind == "PRODUCER"
    assert by_name["child CLIENT"].links == [(by_name["root"].trace_id, by_name["root"].span_id)]
    if tracer_kind == "lean":
        assert by_name["root"].service_name == LABELS.name


def test_the_captured_span_and_the_console_service_do_not_load_protobuf():
    code = ("import sys, fabric.captured, fabric.services.console.service, fabric.services.console.web; "
            "print(sorted(m for m in sys.modules if m.startswith('google.protobuf'))[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
