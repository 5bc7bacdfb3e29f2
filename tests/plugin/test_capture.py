"""Tests of the OTLP receiver, driven by the real OpenTelemetry SDK (the span store's own:
``test_spanstore.py``)."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from fabric.errors import ConfigError
from pytest_meshfabric.capture import (
    CapturedSpan,
    OtlpReceiver,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


@pytest.fixture
def providers() -> Iterator[list[TracerProvider]]:
    """Tracer providers created by a test; shut down (flushing their exporters) at teardown."""
    made: list[TracerProvider] = []
    yield made
    for provider in made:
        provider.shutdown()


def make_tracer(providers: list[TracerProvider], exporter: SpanExporter, service: str, batch: bool = False) -> Any:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "mesh.id": "mesh1"}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    providers.append(provider)
    return provider


def emit_parent_child(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("meshfabric.test")
    with tracer.start_as_current_span("handle request", kind=SpanKind.SERVER, attributes={"peer.count": 3}) as parent:
        with tracer.start_as_current_span("call peer", kind=SpanKind.CLIENT) as child:
            child.set_attribute("mesh.peer", "node-b")
            child.set_attribute("mesh.hops", [1, 2])
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "peer went away"))
        parent.set_status(Status(StatusCode.OK))


def assert_parent_child(spans: list[CapturedSpan], service: str) -> None:
    by_name = {s.name: s for s in spans}
    parent, child = by_name["handle request"], by_name["call peer"]
    assert parent.trace_id == child.trace_id and len(parent.trace_id) == 32
    assert len(parent.span_id) == 16 and len(child.span_id) == 16
    assert parent.parent_span_id is None and parent.is_root
    assert child.parent_span_id == parent.span_id
    assert parent.service_name == child.service_name == service
    assert parent.resource["mesh.id"] == "mesh1"
    assert parent.kind == "SERVER" and child.kind == "CLIENT"
    assert parent.status == "OK"
    assert (child.status, child.status_message) == ("ERROR", "peer went away")
    assert parent.attributes == {"peer.count": 3}
    assert child.attributes == {"mesh.peer": "node-b", "mesh.hops": [1, 2]}
    assert child.events == [("retry", {"attempt": 2})]
    assert child.scope == "meshfabric.test"
    assert 0 < parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns


def two_spans(spans: list[CapturedSpan]) -> list[CapturedSpan] | None:
    return spans if len(spans) >= 2 else None


def post(endpoint: str, body: bytes, headers: dict[str, str], path: str = "/v1/traces") -> tuple[int, bytes]:
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def request_bytes(name: str = "manual span", service: str = "mesh2.relay.r1") -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attr = rs.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", service
    span = rs.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes.fromhex(TRACE_ID), bytes.fromhex(SPAN_ID), name
    span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
    return req.SerializeToString()


PROTOBUF = {"Content-Type": "application/x-protobuf"}


# -- end to end with the SDK exporters ---------------------------------------------


@pytest.mark.parametrize("transport", ["http-batch", "http-simple", "grpc-batch", "grpc-simple"])
def test_sdk_exporter_delivers_parent_and_child(receiver, providers, transport):
    if transport.startswith("http"):
        exporter: SpanExporter = HttpExporter(endpoint=receiver.http_endpoint + "/v1/traces")
    else:
        exporter = GrpcExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    provider = make_tracer(providers, exporter, "mesh1.broker.b1", batch=transport.endswith("batch"))
    emit_parent_child(provider)
    assert provider.force_flush(10_000)

    spans = receiver.store.wait_for(two_spans, timeout=10, description="parent and child")
    assert_parent_child(spans, "mesh1.broker.b1")
    assert receiver.received >= 1 and receiver.rejected == 0


def test_gzip_from_sdk_exporter(receiver, providers):
    exporter = HttpExporter(endpoint=receiver.http_endpoint + "/v1/traces", compression=Compression.Gzip)
    emit_parent_child(make_tracer(providers, exporter, "mesh1.node.n1"))
    assert_parent_child(receiver.store.wait_for(two_spans, timeout=10), "mesh1.node.n1")


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", lambda b: zlib.compress(b)[2:-4])],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_compressed_bodies(receiver, encoding, compress):
    status, body = post(receiver.http_endpoint, compress(request_bytes()), {**PROTOBUF, "Content-Encoding": encoding})
    assert (status, body) == (200, b"")
    [span] = receiver.store.all()
    assert (span.trace_id, span.span_id, span.service_name) == (TRACE_ID, SPAN_ID, "mesh2.relay.r1")


def test_otlp_json_body(receiver):
    doc = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "mesh3.node.x"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": TRACE_ID.upper(), "spanId": SPAN_ID, "parentSpanId": "00f067aa0ba902b7",
                "name": "json span", "kind": 2, "startTimeUnixNano": "10", "endTimeUnixNano": "20",
                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                "links": [{"traceId": TRACE_ID, "spanId": SPAN_ID}],
                "status": {"code": 2, "message": "bad"},
            }]}],
        }]
    }
    status, body = post(receiver.http_endpoint, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert (status, body) == (200, b"{}")
    [span] = receiver.store.all()
    assert span.trace_id == TRACE_ID and span.parent_span_id == "00f067aa0ba902b7"
    assert (span.kind, span.status, span.status_message) == ("SERVER", "ERROR", "bad")
    assert span.attributes == {"n": 7} and span.links == [(TRACE_ID, SPAN_ID)]
    assert span.start_ns == 10 and span.duration_ns == 10


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"\xff\xff\xff\xff", PROTOBUF, 400, "invalid OTLP trace export body"),
        (b"not gzip at all", {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "invalid OTLP"),
        (gzip.compress(request_bytes())[:-10], {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "truncated"),
        (b"{not json", {"Content-Type": "application/json"}, 400, "invalid OTLP"),
        (request_bytes(), {"Content-Type": "text/plain"}, 415, "unsupported Content-Type"),
        (request_bytes(), {**PROTOBUF, "Content-Encoding": "br"}, 415, "unsupported Content-Encoding"),
    ],
    ids=["garbage", "bad-gzip", "truncated-gzip", "bad-json", "content-type", "encoding"],
)
def test_bad_body_is_rejected_and_receiver_keeps_working(receiver, providers, body, headers, status, words):
    got_status, got_body = post(receiver.http_endpoint, body, headers)
    assert got_status == status
    assert words in got_body.decode()
    assert receiver.rejected == 1 and words in (receiver.last_rejection or "")
    assert receiver.store.all() == []

    emit_parent_child(make_tracer(providers, HttpExporter(endpoint=receiver.http_endpoint + "/v1/traces"), "svc"))
    assert_parent_child(receiver.store.wait_for(two_spans, timeout=10), "svc")
    assert receiver.rejected == 1


def test_bad_span_id_length_is_rejected(receiver):
    req = ExportTraceServiceRequest.FromString(request_bytes())
    req.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01\x02"
    status, body = post(receiver.http_endpoint, req.SerializeToString(), PROTOBUF)
    assert status == 400 and b"span_id must be 8 bytes" in body


def test_wrong_path_is_404(receiver):
    status, body = post(receiver.http_endpoint, request_bytes(), PROTOBUF, path="/v1/metrics")
    assert status == 404 and b"/v1/traces" in body
    assert receiver.received == 0


def test_errors_do_not_desync_a_keepalive_connection(receiver):
    host, port = receiver.http_endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for path, body, status in [
            ("/v1/logs", request_bytes(), 404),  # body left unread: the server must close
            ("/v1/traces", b"\xff\xff", 400),
            ("/v1/traces", request_bytes(), 200),
            ("/v1/traces", request_bytes("again"), 200),
        ]:
            conn.request("POST", path, body=body, headers=PROTOBUF)
            response = conn.getresponse()
            response.read()
            assert response.status == status, path
    finally:
        conn.close()
    assert [s.name for s in receiver.store.all()] == ["manual span", "again"]


def test_grpc_rejects_bad_ids_with_invalid_argument(receiver):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
        TraceServiceStub,
    )

    req = ExportTraceServiceRequest.FromString(request_bytes())
    req.resource_spans[0].scope_spans[0].spans[0].trace_id = b"short"
    with grpc.insecure_channel(receiver.grpc_endpoint.removeprefix("http://")) as channel:
        stub = TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(req, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "trace_id must be 16 bytes" in info.value.details()
        stub.Export(ExportTraceServiceRequest.FromString(request_bytes()), timeout=10)
    assert (receiver.received, receiver.rejected, len(receiver.store.all())) == (2, 1, 1)


def test_occupied_grpc_port_fails_start_cleanly():
    with OtlpReceiver(grpc=True) as first:
        port = int(first.grpc_endpoint.rsplit(":", 1)[1])
        second = OtlpReceiver(grpc_port=port)
        with pytest.raises(RuntimeError):
            second.start()
        with pytest.raises(RuntimeError, match="not running"):
            second.http_endpoint


# -- child processes configured by env() -------------------------------------------

CHILD = textwrap.dedent(
    """
    import os
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    if os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    provider = TracerProvider(resource=Resource.create({"service.name": "mesh1.broker.child"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("child")
    with tracer.start_as_current_span("child root"):
        with tracer.start_as_current_span("child work", attributes={"pid": os.getpid()}):
            pass
    provider.shutdown()
    """
)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_child_process_exports_via_env(receiver, protocol):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(receiver.env(protocol))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to export" not in proc.stderr, proc.stderr

    spans = receiver.store.wait_for(two_spans, timeout=10, description="the child's two spans")
    [root] = receiver.store.find(name="child root", service="mesh1.broker.*")
    [work] = receiver.store.find(name="child work", service="mesh1.broker.child")
    assert work.parent_span_id == root.span_id and work.trace_id == root.trace_id and len(spans) == 2
    assert receiver.store.find(name="child *", pid=work.attributes["pid"]) == [work]


def test_env_values(receiver):
    assert receiver.env() == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    assert receiver.env("grpc", bsp_schedule_delay_ms=50) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    assert receiver.http_endpoint.startswith("http://127.0.0.1:")
    assert receiver.http_endpoint != receiver.grpc_endpoint
    with pytest.raises(ConfigError, match="unknown OTLP protocol"):
        receiver.env("zipkin")


def test_lifecycle_and_http_only():
    rx = OtlpReceiver(grpc=False)
    with pytest.raises(RuntimeError, match="not running"):
        rx.http_endpoint
    rx.start()
    try:
        port = int(rx.http_endpoint.rsplit(":", 1)[1])
        with pytest.raises(RuntimeError, match="gRPC"):
            rx.grpc_endpoint
        keepalive = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # like an exporter's pooled one
        keepalive.request("POST", "/v1/traces", body=request_bytes(), headers=PROTOBUF)
        response = keepalive.getresponse()
        assert (response.status, response.read(), response.will_close) == (200, b"", False)
    finally:
        rx.stop()
    assert keepalive.sock is not None and keepalive.sock.recv(1) == b""  # stop() closed the idle connection
    keepalive.close()
    assert len(rx.store.all()) == 1 and rx.received == 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    rx.stop()  # idempotent


# -- forwarding --------------------------------------------------------------------


def test_forwarding_reposts_http_and_grpc_exports(providers):
    with OtlpReceiver(grpc=False) as downstream:
        upstream = OtlpReceiver(forward_to=downstream.http_endpoint + "/v1/traces").start()
        try:
            exporter = HttpExporter(endpoint=upstream.http_endpoint + "/v1/traces", compression=Compression.Gzip)
            emit_parent_child(make_tracer(providers, exporter, "via-http"))
            emit_parent_child(make_tracer(providers, GrpcExporter(endpoint=upstream.grpc_endpoint, insecure=True), "via-grpc"))
            spans = downstream.store.wait_for(lambda s: len(s) >= 4 and s, timeout=10, description="4 forwarded spans")
        finally:
            upstream.stop()
        assert {s.service_name for s in spans} == {"via-http", "via-grpc"}
        assert_parent_child(downstream.store.find(service="via-grpc"), "via-grpc")
        assert upstream.forwarded == upstream.received == 4 and upstream.forward_failures == 0


def test_forwarding_failures_are_counted_not_raised():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1/traces"
    upstream = OtlpReceiver(grpc=False, forward_to=dead).start()
    try:
        assert post(upstream.http_endpoint, request_bytes(), PROTOBUF)[0] == 200
        assert post(upstream.http_endpoint, request_bytes(), PROTOBUF)[0] == 200
    finally:
        upstream.stop()  # drains the forward queue before returning
    assert len(upstream.store.all()) == 2
    assert (upstream.forwarded, upstream.forward_failures) == (0, 2)
