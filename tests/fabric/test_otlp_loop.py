"""The event loop's OTLP exporter: when a node uses it, batching, losses, and the SDK's exporter
for what no loop can send. Posts go to the harness's real OTLP receiver. How it meets a
collector that is down, late, busy or hangs up: ``test_otlp_loop_collector.py``."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_trace_exporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanContext, TraceFlags

from fabric import otlp_encoder
from fabric.errors import ConfigError
from fabric.otlp_loop import EXPORT_ENV, LoopBatchSpanProcessor, choose
from fabric.telemetry import export_processor
from tests.fabric.otlp_loop_support import (
    LABELS,
    attached,
    end_spans,
    sdk_export_threads,
    spans_named,
    traces_url,
    until,
)

pytestmark = pytest.mark.usefixtures("own_encoder")

LOOPBACK = "http://127.0.0.1:4318/v1/traces"
OWN = "C" if otlp_encoder.native_built() else "Python"  # the encoder a node's status names


@pytest.mark.parametrize("url, env, expected", [
    (LOOPBACK, {}, True),
    ("http://localhost:4318/v1/traces", {}, True),
    ("http://[::1]:4318/v1/traces", {}, True),
    ("https://127.0.0.1:4318/v1/traces", {}, False),  # TLS: the SDK's exporter
    ("http://10.1.2.3:4318/v1/traces", {}, False),  # not loopback
    (LOOPBACK, {EXPORT_ENV: "thread"}, False),
    (LOOPBACK, {EXPORT_ENV: "auto"}, True),
    (LOOPBACK, {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, False),
    (LOOPBACK, {"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=x"}, False),
    (LOOPBACK, {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "mine"}, False),
    (LOOPBACK, {"HTTP_PROXY": "http://proxy:3128"}, False),
])
def test_the_loop_exports_only_what_the_sdk_exporter_would_send_as_is(url, env, expected):
    assert choose(url, env) is expected


def test_an_unknown_export_choice_is_a_config_error():
    with pytest.raises(ConfigError, match=rf"{EXPORT_ENV}='fastest'.*auto, thread"):
        choose(LOOPBACK, {EXPORT_ENV: "fastest"})


def test_a_node_gets_the_loop_processor_for_a_loopback_http_collector_else_the_sdks():
    http = HttpExporter(endpoint=LOOPBACK)
    grpc = GrpcExporter(endpoint="http://127.0.0.1:4317", insecure=True)
    processors = [export_processor(http, {}), export_processor(http, {EXPORT_ENV: "thread"}),
                  export_processor(grpc, {})]
    try:
        assert [type(p) for p in processors] == [LoopBatchSpanProcessor, BatchSpanProcessor, BatchSpanProcessor]
    finally:
        for processor in processors:
            processor.shutdown()


def test_the_sdk_processor_when_asked_has_its_thread(receiver, exporting):
    telemetry = exporting(traces_url(receiver), **{EXPORT_ENV: "thread"})
    assert isinstance(telemetry.exporter, BatchSpanProcessor) and telemetry.loop_exporter is None
    assert sdk_export_threads()  # what the loop's exporter does without
    assert telemetry.export_status() == {"via": "SDK thread", "encoder": OWN}
    end_spans(telemetry, ["threaded"])
    assert telemetry.flush(10)
    receiver.store.wait_for_span(name="threaded", timeout=10)


def test_the_schedule_is_the_nodes_unless_the_variable_says():
    exporter = HttpExporter(endpoint=LOOPBACK)
    try:
        assert LoopBatchSpanProcessor(LOOPBACK, exporter, bytes, {}).delay_s == 5.0  # the SDK's default
        assert LoopBatchSpanProcessor(LOOPBACK, exporter, bytes, {}, schedule_delay_ms=200).delay_s == 0.2
        told = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
        assert LoopBatchSpanProcessor(LOOPBACK, exporter, bytes, told, schedule_delay_ms=200).delay_s == 0.05
    finally:
        exporter.shutdown()


def test_a_bad_batching_variable_is_a_config_error():
    exporter = HttpExporter(endpoint=LOOPBACK)
    try:
        with pytest.raises(ConfigError, match="OTEL_BSP_MAX_QUEUE_SIZE='many'"):
            LoopBatchSpanProcessor(LOOPBACK, exporter, lambda spans: b"", {"OTEL_BSP_MAX_QUEUE_SIZE": "many"})
    finally:
        exporter.shutdown()


# -- exporting from the loop ----------------------------------------------------

@pytest.mark.asyncio
async def test_spans_reach_the_collector_from_the_loop_with_no_thread(receiver, exporting):
    before = set(sdk_export_threads())  # other tests' may still be winding down
    telemetry = exporting(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000")
    telemetry.attach(asyncio.get_running_loop())
    with telemetry.tracer.start_as_current_span("parent") as parent, telemetry.tracer.start_as_current_span("child"):
        pass
    await telemetry.drain()  # the schedule (60 s) would not send them in this test's time
    await spans_named(receiver, ["parent", "child"])
    got = {s.name: s for s in receiver.store.all()}
    assert got["child"].parent_span_id == got["parent"].span_id
    assert got["parent"].trace_id == format(parent.get_span_context().trace_id, "032x")
    assert got["parent"].service_name == LABELS.name
    assert set(sdk_export_threads()) <= before  # no export thread of its own
    assert telemetry.export_status() == {"via": "event loop", "encoder": OWN, "url": traces_url(receiver),
                                         "posts": 1, "dropped": 0, "failed": 0}


@pytest.mark.asyncio
async def test_a_full_batch_goes_at_once_and_a_partial_one_waits_for_the_schedule(receiver, exporting):
    telemetry = exporting(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4")
    await attached(telemetry)
    exporter = telemetry.exporter
    end_spans(telemetry, ["a1", "a2", "a3", "a4", "b1"])
    await spans_named(receiver, ["a1", "a2", "a3", "a4"])  # long before the 60 s schedule
    await until(lambda: exporter.posts == 1)  # counted once the answer is read
    assert [s.name for s in exporter._queue] == ["b1"]  # not a whole batch: it waits


@pytest.mark.asyncio
async def test_the_schedule_sends_what_is_queued(receiver, exporting):
    telemetry = exporting(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="50")
    await attached(telemetry)
    end_spans(telemetry, ["lone"])
    await spans_named(receiver, ["lone"])


@pytest.mark.asyncio
async def test_spans_ended_on_another_thread_are_exported(receiver, exporting):
    telemetry = exporting(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="3")
    await attached(telemetry)
    worker = threading.Thread(target=end_spans, args=(telemetry, ["t1", "t2", "t3"]))
    worker.start()
    await asyncio.to_thread(worker.join)
    await spans_named(receiver, ["t1", "t2", "t3"])  # the batch woke the loop from the other thread


@pytest.mark.asyncio
async def test_spans_ended_on_many_threads_while_the_loop_drains_are_each_sent_once(receiver, exporting):
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands between nearly any two bytecodes
    try:
        await ends_on_threads_and_drains(receiver, exporting)
    finally:
        sys.setswitchinterval(switch)


async def ends_on_threads_and_drains(receiver, exporting) -> None:
    telemetry = exporting(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="20", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="7",
                     OTEL_BSP_MAX_QUEUE_SIZE="100000")
    await attached(telemetry)
    names = [[f"w{w}-{i}" for i in range(300)] for w in range(4)]
    workers = [threading.Thread(target=end_spans, args=(telemetry, these)) for these in names]
    for worker in workers:
        worker.start()
    for worker in workers:
        await asyncio.to_thread(worker.join)
    await telemetry.drain()
    sent = [s.name for s in receiver.store.wait_for(lambda spans: len(spans) >= 1200 and spans, timeout=20)]
    assert sorted(sent) == sorted(name for these in names for name in these)
    assert (telemetry.exporter.dropped, telemetry.exporter.failed, len(telemetry.exporter._queue)) == (0, 0, 0)


def test_without_a_loop_a_full_queue_drops_and_shutdown_sends_the_rest(receiver, exporting, caplog):
    telemetry = exporting(traces_url(receiver), OTEL_BSP_MAX_QUEUE_SIZE="4", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2")
    with caplog.at_level(logging.WARNING, logger="fabric.otlp_loop"):
        end_spans(telemetry, ["q1", "q2", "q3", "q4", "over1", "over2"])  # no loop attached: all wait
    assert telemetry.exporter.dropped == 2
    assert caplog.text.count("queue is full") == 1  # said once, not per span
    telemetry.shutdown()  # through the SDK's exporter, on this thread
    names = {s.name for s in receiver.store.wait_for(lambda spans: len(spans) >= 4 and spans, timeout=10)}
    assert names == {"q1", "q2", "q3", "q4"}


def test_only_sampled_spans_are_queued(receiver, exporting):
    telemetry = exporting(traces_url(receiver))
    recorded_only = ReadableSpan("recorded, not sampled", context=SpanContext(1, 2, False, TraceFlags(0)))
    telemetry.exporter.on_end(recorded_only)
    end_spans(telemetry, ["sampled"])  # a node's own span: sampled, taken without reading its flags
    telemetry.shutdown()
    names = {s.name for s in receiver.store.wait_for(lambda spans: spans, timeout=10)}
    assert names == {"sampled"}


def test_the_encoder_is_the_http_exporters_own(receiver, exporting, monkeypatch):
    calls: list[int] = []
    ours = http_trace_exporter.encode_spans

    def counting(spans):
        calls.append(len(spans))
        return ours(spans)

    monkeypatch.setattr(http_trace_exporter, "encode_spans", counting)  # what MESHFABRIC_OTLP_ENCODER picks

    async def run() -> None:
        telemetry = exporting(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000")
        telemetry.attach(asyncio.get_running_loop())
        end_spans(telemetry, ["encoded"])
        await telemetry.drain()

    asyncio.run(run())
    assert calls == [1]
    receiver.store.wait_for_span(name="encoded", timeout=10)


@pytest.mark.asyncio
async def test_an_unexpected_error_does_not_end_the_export(receiver, exporting, monkeypatch, caplog):
    telemetry = exporting(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1")
    await attached(telemetry)
    exporter = telemetry.exporter
    post = exporter._poster.post
    failures = iter([RuntimeError("a bug in the post")])

    async def post_once_broken(body: bytes) -> int:
        error = next(failures, None)
        if error is not None:
            raise error
        return await post(body)

    monkeypatch.setattr(exporter._poster, "post", post_once_broken)
    with caplog.at_level(logging.ERROR, logger="fabric.otlp_loop"):
        end_spans(telemetry, ["hit by the bug"])
        await until(lambda: "exporting spans failed" in caplog.text)
    end_spans(telemetry, ["after the bug"])  # the export task is still there to send it
    await spans_named(receiver, ["after the bug"])


def test_a_batch_that_cannot_be_encoded_is_dropped_alone(receiver, exporting, caplog):
    async def run() -> None:
        telemetry = exporting(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1")
        encode = telemetry.exporter.encode
        telemetry.exporter.encode = lambda spans: encode(spans) if spans[0].name != "unencodable" else 1 / 0
        await attached(telemetry)
        end_spans(telemetry, ["unencodable", "fine"])
        await telemetry.drain()
        assert telemetry.exporter.failed == 1

    with caplog.at_level(logging.ERROR, logger="fabric.otlp_loop"):
        asyncio.run(run())
    assert "encoding 1 spans for OTLP failed" in caplog.text
    receiver.store.wait_for_span(name="fine", timeout=10)
