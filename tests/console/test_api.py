"""The console's HTTP API on a real console node: clear 4xx JSON for bad input, a working OTLP
endpoint (real SDK exporters), forwarding, the token gate, and its URL where tools look for it."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from fabric import control
from pytest_meshfabric import OtlpReceiver
from tests.console.conftest import Nodes, directory_names, http
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.slow

TOKEN = "console-test-token"


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """One console node on an ephemeral port, with nothing else around it."""
    started = Nodes(tmp_path_factory.mktemp("console"))
    try:
        yield started.start("mesh1", "console")
    finally:
        started.close()


def url_of(node) -> str:
    return node.info["console"]


def export_with_sdk(endpoint: str, service: str, compression: Compression = Compression.NoCompression) -> str:
    """Two spans (a parent and its child) through the real OTLP/HTTP exporter; returns the trace id."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, "mesh.id": "mesh9"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, compression=compression)))
    tracer = provider.get_tracer("console-test")
    with tracer.start_as_current_span("outer", attributes={"test.key": "value"}) as outer:
        with tracer.start_as_current_span("inner"):
            pass
    provider.shutdown()
    return format(outer.get_span_context().trace_id, "032x")


def test_the_url_is_in_the_ready_line_the_status_op_and_the_console_op(console):
    url = url_of(console)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    assert console.info["console_socket"].endswith("console.sock")
    status = control.request_sync(console.control_path, "status")
    assert status["console"] == url
    described = control.request_sync(console.control_path, "console")
    assert described["url"] == url and described["actions_enabled"] is False
    api = http("GET", url + "api/status").json()
    assert api["node"]["name"] == console.name and api["console"]["url"] == url
    page = http("GET", url)
    assert page.status == 200 and b"meshfabric console" in page.body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert http("GET", url + "static/app.js").status == 200


def test_the_console_also_serves_on_its_unix_socket(console):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(console.info["console_socket"])
        s.sendall(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert console.name.encode() in body


BAD_REQUESTS = [
    ("GET", "api/traces?limit=x", None, {}, 400, "'limit' must be a whole number"),
    ("GET", "api/traces?limit=0", None, {}, 400, "from 1 to 500"),
    ("GET", "api/traces?limit=100000", None, {}, 400, "from 1 to 500"),
    ("GET", "api/traces?offset=-1", None, {}, 400, "'offset'"),
    ("GET", "api/traces?service=" + "x" * 300, None, {}, 400, "the limit is 200"),
    ("GET", "api/traces/not-a-trace-id", None, {}, 400, "32 hex digits"),
    ("GET", "api/traces/" + "ab" * 16, None, {}, 404, "is not in this console"),
    ("GET", "api/directory?mesh=Bad.Mesh", None, {}, 400, "mesh label"),
    ("GET", "api/nothing-here", None, {}, 404, "GET /api lists it"),
    ("GET", "static/../../../etc/passwd", None, {}, 404, "nothing at"),
    ("DELETE", "api/status", None, {}, 405, "DELETE is not allowed"),
    ("GET", "api/status", None, {"Host": "evil.example:80"}, 403, "answers only requests for localhost"),
    ("POST", "api/actions/produce", b'{"topic": "t", "value": "v"}', {"Content-Type": "application/json"},
     403, "read-only"),
    ("POST", "v1/traces", b"\x00garbage\xff" * 10, {"Content-Type": "application/x-protobuf"}, 400,
     "invalid OTLP trace export body"),
    ("POST", "v1/traces", b"{not json", {"Content-Type": "application/json"}, 400, "invalid OTLP"),
    ("POST", "v1/traces", b"hello", {"Content-Type": "text/plain"}, 415, "unsupported Content-Type"),
    ("POST", "v1/traces", b"not gzip", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
     400, "invalid OTLP"),
    ("POST", "v1/traces", b"x", {"Content-Type": "application/x-protobuf", "Content-Encoding": "br"},
     415, "unsupported Content-Encoding"),
    ("GET", "v1/traces", None, {}, 405, "GET is not allowed"),
]


@pytest.mark.parametrize("method,path,body,headers,status,message", BAD_REQUESTS,
                         ids=[f"{m} {p[:40]} -> {s}" for m, p, _, _, s, _ in BAD_REQUESTS])
def test_bad_input_gets_a_clear_4xx_json_error(console, method, path, body, headers, status, message):
    reply = http(method, url_of(console) + path, body, headers)
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()
    assert message in error["error"] and error["status"] == status
    assert b"Traceback" not in reply.body


def test_an_oversized_export_gets_413_and_the_node_keeps_serving(console):
    url = url_of(console)
    try:
        reply = http("POST", url + "v1/traces", b"\x00" * (17 * 1024 * 1024),
                     {"Content-Type": "application/x-protobuf"})
        assert reply.status == 413 and "over" in reply.json()["error"]
    except (ConnectionError, OSError):
        pass  # the server may close the connection mid-upload, which is a refusal too
    assert http("GET", url + "api/status").status == 200 and console.alive()


def test_real_sdk_exports_are_stored_and_garbage_does_not_stop_the_node(console):
    url = url_of(console)
    endpoint = url + "v1/traces"
    assert http("POST", endpoint, b"\xffgarbage", {"Content-Type": "application/x-protobuf"}).status == 400
    trace_id = export_with_sdk(endpoint, "sdk-plain")
    gz_trace_id = export_with_sdk(endpoint, "sdk-gzip", Compression.Gzip)
    assert console.alive()

    found = http("GET", url + "api/traces?service=sdk-plain").json()
    assert [t["trace_id"] for t in found["traces"]] == [trace_id]
    summary = found["traces"][0]
    assert (summary["root_name"], summary["span_count"], summary["services"]) == ("outer", 2, ["sdk-plain"])
    spans = http("GET", f"{url}api/traces/{trace_id}").json()["spans"]
    outer = next(s for s in spans if s["name"] == "outer")
    inner = next(s for s in spans if s["name"] == "inner")
    assert inner["parent_span_id"] == outer["span_id"] and outer["attributes"]["test.key"] == "value"
    assert http("GET", f"{url}api/traces?service=sdk-gzip&name=inner").json()["traces"][0]["trace_id"] == gz_trace_id
    stats = http("GET", url + "api/status").json()["console"]["collector"]
    assert stats["rejected"] >= 1 and stats["exports"] >= 2


def test_otlp_json_exports_are_accepted_too(console):
    url = url_of(console)
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-exporter"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "from-json",
            "kind": 2, "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000"}]}]}]}
    reply = http("POST", url + "v1/traces", gzip.compress(json.dumps(body).encode()),
                 {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert reply.status == 200 and reply.json() == {}
    spans = http("GET", url + "api/traces/5b8efff798038103d269b633813fc60c").json()["spans"]
    assert [(s["name"], s["kind"], s["service"]) for s in spans] == [("from-json", "SERVER", "json-exporter")]


def test_received_spans_are_forwarded_and_actions_need_the_token(nodes):
    with OtlpReceiver(grpc=False) as upstream:
        broker = nodes.start("mesh1", "broker")
        console = nodes.start("mesh1", "console", [broker.address],
                              extra=["--otlp-forward", upstream.http_endpoint.removesuffix("/v1/traces"),
                                     "--console-token", TOKEN])
        wait_until(lambda: broker.name in directory_names(console), 10, "the console to see the broker")
        url = url_of(console)
        trace_id = export_with_sdk(url + "v1/traces", "forwarded-service")
        upstream.store.wait_for(lambda spans: len([s for s in spans if s.trace_id == trace_id]) == 2,
                                timeout=10, description="both spans forwarded upstream")

        action = url + "api/actions/produce"
        record = json.dumps({"topic": "console-actions", "value": "hello", "to": "mesh1.broker"}).encode()
        json_type = {"Content-Type": "application/json"}
        assert http("POST", action, record, json_type).status == 401
        wrong = {**json_type, "Authorization": "Bearer not-the-token"}
        assert http("POST", action, record, wrong).status == 401
        auth = {**json_type, "Authorization": f"Bearer {TOKEN}"}
        assert http("POST", action, b"[1, 2]", auth).status == 400
        missing = http("POST", action, json.dumps({"topic": "t", "value": "v", "to": "mesh7.broker"}).encode(), auth)
        assert missing.status == 404 and "mesh7" in missing.json()["error"]
        ack = http("POST", action, record, auth)
        assert ack.status == 200, ack.body
        assert ack.json()["broker"] == broker.name and ack.json()["offset"] == 0
        assert http("GET", url + "api/status").json()["console"]["forward"]["forwarded"] >= 1


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fabric", *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("flags,message", [
    (["--console-port", "70000"], "--console-port 70000 is not a TCP port"),
    (["--otlp-forward", "ftp://example"], "is not an OTLP/HTTP URL"),
    (["--console-token", "short"], "at least 8 characters"),
])
def test_bad_console_flags_exit_2_before_booting(tmp_path, flags, message):
    result = run_cli("node", "--mesh", "mesh1", "--type", "console", "--data-dir", str(tmp_path / "d"), *flags)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d" / "identity.key").exists()


def test_a_busy_console_port_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("node", "--mesh", "mesh1", "--type", "console", "--data-dir", str(tmp_path / "d"),
                         "--console-port", str(port))
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--console-port" in result.stderr
    assert "Traceback" not in result.stderr
