"""The event loop's OTLP exporter: when a node uses it, batching, retries, losses, and the SDK's
exporter for what no loop can send. Posts go to the harness's real OTLP receiver; only the
status-code tests use a stand-in HTTP server (aiohttp), to answer what a receiver would not."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Self

import pytest
from aiohttp import web
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

from fabric import otlp_encoder, otlp_exporters
from fabric.errors import ConfigError
from fabric.identity import Identity, node_name
from fabric.otlp_loop import EXPORT_ENV, LoopBatchSpanProcessor, choose
from fabric.telemetry import NodeLabels, Telemetry, export_processor
from pytest_meshfabric.capture import OtlpReceiver

NODE_ID = Identity.generate().node_id
LABELS = NodeLabels(node_name("mesh1", "gateway", NODE_ID), "mesh1", "gateway", NODE_ID)
LOOPBACK = "http://127.0.0.1:4318/v1/traces"
BATCHING = ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", EXPORT_ENV)


@pytest.fixture(autouse=True)
def own_encoder() -> None:
    otlp_exporters.adopt_in_http_exporter()  # as a node's exporter_from_env does


OWN = "C" if otlp_encoder.native_built() else "Python"  # the encoder a node's status names


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Telemetry]]:
    """``made(url, **batching)``: a node's Telemetry exporting to ``url``; shut down at teardown."""
    for name in BATCHING:
        monkeypatch.delenv(name, raising=False)
    telemetries: list[Telemetry] = []

    def make(url: str, **env: str) -> Telemetry:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        telemetry = Telemetry(LABELS, HttpExporter(endpoint=url))
        telemetries.append(telemetry)
        return telemetry

    yield make
    for telemetry in telemetries:
        telemetry.shutdown()


def traces_url(rx: OtlpReceiver) -> str:
    return f"{rx.http_endpoint}/v1/traces"


def end_spans(telemetry: Telemetry, names: list[str]) -> None:
    for name in names:
        with telemetry.tracer.start_as_current_span(name):
            pass


async def spans_named(rx: OtlpReceiver, names: list[str], timeout: float = 10.0) -> None:
    wanted = set(names)
    await rx.store.await_for(lambda spans: wanted <= {s.name for s in spans}, timeout=timeout,
                             description=f"spans {sorted(wanted)}")


async def attached(telemetry: Telemetry) -> None:
    """Give ``telemetry`` this loop and let its export task reach its wait (one loop turn), so
    spans ended next find it waiting, as in a running node."""
    telemetry.attach(asyncio.get_running_loop())
    await asyncio.sleep(0)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (on the loop, so the export task runs) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def sdk_export_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("OtelBatch")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- which processor a node gets ------------------------------------------------

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


def test_the_sdk_processor_when_asked_has_its_thread(receiver, made):
    telemetry = made(traces_url(receiver), **{EXPORT_ENV: "thread"})
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
async def test_spans_reach_the_collector_from_the_loop_with_no_thread(receiver, made):
    before = set(sdk_export_threads())  # other tests' may still be winding down
    telemetry = made(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000")
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
async def test_a_full_batch_goes_at_once_and_a_partial_one_waits_for_the_schedule(receiver, made):
    telemetry = made(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4")
    await attached(telemetry)
    exporter = telemetry.exporter
    end_spans(telemetry, ["a1", "a2", "a3", "a4", "b1"])
    await spans_named(receiver, ["a1", "a2", "a3", "a4"])  # long before the 60 s schedule
    await until(lambda: exporter.posts == 1)  # counted once the answer is read
    assert [s.name for s in exporter._queue] == ["b1"]  # not a whole batch: it waits


@pytest.mark.asyncio
async def test_the_schedule_sends_what_is_queued(receiver, made):
    telemetry = made(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="50")
    await attached(telemetry)
    end_spans(telemetry, ["lone"])
    await spans_named(receiver, ["lone"])


@pytest.mark.asyncio
async def test_spans_ended_on_another_thread_are_exported(receiver, made):
    telemetry = made(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="3")
    await attached(telemetry)
    worker = threading.Thread(target=end_spans, args=(telemetry, ["t1", "t2", "t3"]))
    worker.start()
    await asyncio.to_thread(worker.join)
    await spans_named(receiver, ["t1", "t2", "t3"])  # the batch woke the loop from the other thread


@pytest.mark.asyncio
async def test_spans_ended_on_many_threads_while_the_loop_drains_are_each_sent_once(receiver, made):
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands between nearly any two bytecodes
    try:
        await ends_on_threads_and_drains(receiver, made)
    finally:
        sys.setswitchinterval(switch)


async def ends_on_threads_and_drains(receiver, made) -> None:
    telemetry = made(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="20", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="7",
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


@pytest.mark.asyncio
async def test_a_collector_that_is_down_loses_that_batch_only(made, caplog):
    port = free_port()
    telemetry = made(f"http://127.0.0.1:{port}/v1/traces", OTEL_BSP_SCHEDULE_DELAY="60000",
                     OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2", OTEL_EXPORTER_OTLP_TIMEOUT="0.5")
    await attached(telemetry)
    exporter = telemetry.exporter
    with caplog.at_level(logging.WARNING, logger="fabric.otlp_loop"):
        end_spans(telemetry, ["lost1", "lost2"])
        await until(lambda: exporter.failed == 2)  # no time for the next attempt: dropped and logged
    assert "exporting 2 spans" in caplog.text and "dropped" in caplog.text
    with OtlpReceiver(http_port=port) as receiver:  # the collector comes (back) up
        end_spans(telemetry, ["kept1", "kept2"])
        await spans_named(receiver, ["kept1", "kept2"])
        assert not {"lost1", "lost2"} & {s.name for s in receiver.store.all()}
        await until(lambda: exporter.posts == 1)


class StandIn:
    """An HTTP server answering each POST with the next status of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int], keepalive_s: float = 75.0) -> None:
        self.statuses = list(statuses)
        self.keepalive_s = keepalive_s
        self.bodies: list[bytes] = []
        self.connections: set[int] = set()

    async def handle(self, request: web.Request) -> web.Response:
        self.connections.add(id(request.transport))
        self.bodies.append(await request.read())
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, headers={"Retry-After": "0"} if status >= 400 else {})

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        self.runner = web.AppRunner(app, keepalive_timeout=self.keepalive_s)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1/traces"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@pytest.mark.asyncio
async def test_a_collector_that_starts_a_moment_later_gets_the_first_spans(made, caplog):
    port = free_port()
    telemetry = made(f"http://127.0.0.1:{port}/v1/traces", OTEL_BSP_SCHEDULE_DELAY="60000",
                     OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1")
    await attached(telemetry)
    with caplog.at_level(logging.DEBUG, logger="fabric.otlp_loop"):
        end_spans(telemetry, ["early"])
        await until(lambda: "trying again" in caplog.text)  # refused once, backing off
    with OtlpReceiver(http_port=port) as receiver:  # as the demo's console starts after its brokers
        await spans_named(receiver, ["early"])
    assert telemetry.exporter.failed == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("statuses, posts, failed, requests", [
    ([503, 429], 1, 0, 3),  # busy: tried again (each answer has Retry-After: 0, so no waiting here)
    ([400], 0, 1, 1),  # refused: not tried again
])
async def test_a_busy_collector_is_tried_again_and_a_refusal_is_not(made, statuses, posts, failed, requests):
    async with StandIn(statuses) as stand_in:
        telemetry = made(stand_in.url, OTEL_BSP_SCHEDULE_DELAY="60000")
        telemetry.attach(asyncio.get_running_loop())
        end_spans(telemetry, ["one"])
        await telemetry.drain()
        assert (telemetry.exporter.posts, telemetry.exporter.failed) == (posts, failed)
        assert len(stand_in.bodies) == requests


@pytest.mark.asyncio
async def test_posts_share_one_connection(made):
    async with StandIn([]) as stand_in:
        telemetry = made(stand_in.url, OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1")
        telemetry.attach(asyncio.get_running_loop())
        end_spans(telemetry, ["one", "two", "three"])
        await telemetry.drain()
        assert telemetry.exporter.posts == 3
    assert len(stand_in.connections) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("noticed", [True, False])
async def test_a_connection_the_collector_closed_while_idle_is_not_a_failure(made, noticed, caplog):
    """Noticed (the loop read the close) or not (the next post finds out): a new connection, at
    once, not a failed attempt and a backoff."""
    caplog.set_level(logging.DEBUG, logger="fabric.otlp_loop")
    async with StandIn([], keepalive_s=0.05) as stand_in:
        telemetry = made(stand_in.url, OTEL_BSP_SCHEDULE_DELAY="60000")
        telemetry.attach(asyncio.get_running_loop())
        end_spans(telemetry, ["before"])
        await telemetry.drain()
        reader = telemetry.exporter._poster._streams[0]
        await until(reader.at_eof)  # the collector hung up
        if not noticed:
            reader.at_eof = lambda: False  # as if the close arrived while the post was on its way
        end_spans(telemetry, ["after"])
        await telemetry.drain()
        assert (telemetry.exporter.posts, telemetry.exporter.failed) == (2, 0)
    assert len(stand_in.connections) == 2
    assert "trying again" not in caplog.text


def test_without_a_loop_a_full_queue_drops_and_shutdown_sends_the_rest(receiver, made, caplog):
    telemetry = made(traces_url(receiver), OTEL_BSP_MAX_QUEUE_SIZE="4", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2")
    with caplog.at_level(logging.WARNING, logger="fabric.otlp_loop"):
        end_spans(telemetry, ["q1", "q2", "q3", "q4", "over1", "over2"])  # no loop attached: all wait
    assert telemetry.exporter.dropped == 2
    assert caplog.text.count("queue is full") == 1  # said once, not per span
    telemetry.shutdown()  # through the SDK's exporter, on this thread
    names = {s.name for s in receiver.store.wait_for(lambda spans: len(spans) >= 4 and spans, timeout=10)}
    assert names == {"q1", "q2", "q3", "q4"}


def test_only_sampled_spans_are_queued(receiver, made):
    telemetry = made(traces_url(receiver))
    recorded_only = ReadableSpan("recorded, not sampled", context=SpanContext(1, 2, False, TraceFlags(0)))
    telemetry.exporter.on_end(recorded_only)
    end_spans(telemetry, ["sampled"])  # a node's own span: sampled, taken without reading its flags
    telemetry.shutdown()
    names = {s.name for s in receiver.store.wait_for(lambda spans: spans, timeout=10)}
    assert names == {"sampled"}


def test_the_encoder_is_the_http_exporters_own(receiver, made, monkeypatch):
    calls: list[int] = []
    ours = http_trace_exporter.encode_spans

    def counting(spans):
        calls.append(len(spans))
        return ours(spans)

    monkeypatch.setattr(http_trace_exporter, "encode_spans", counting)  # what MESHFABRIC_OTLP_ENCODER picks

    async def run() -> None:
        telemetry = made(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000")
        telemetry.attach(asyncio.get_running_loop())
        end_spans(telemetry, ["encoded"])
        await telemetry.drain()

    asyncio.run(run())
    assert calls == [1]
    receiver.store.wait_for_span(name="encoded", timeout=10)


@pytest.mark.asyncio
async def test_an_unexpected_error_does_not_end_the_export(receiver, made, monkeypatch, caplog):
    telemetry = made(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1")
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


def test_a_batch_that_cannot_be_encoded_is_dropped_alone(receiver, made, caplog):
    async def run() -> None:
        telemetry = made(traces_url(receiver), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1")
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
