"""An OTLP/HTTP trace endpoint that counts what it is sent and keeps nothing.

The cost of exporting every span is the nodes' (their exporters' encoding, batching and
posting), measured against a receiver that does as little as a collector with an empty
pipeline would: it reads each request, parses it (so a malformed export is caught and counted,
never measured as a success), counts its spans and answers 200. The harness's own receiver
(``pytest_meshfabric.capture``) decodes every span into Python objects for the tests'
assertions: its cost is the harness's, not tracing's.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK's exporter reuses its connection
    server: _Server

    def do_POST(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            self.server.sink._count(0, rejected=True)
            self._reply(400)
            return
        self.server.sink._count(sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans))
        self._reply(200, _EMPTY_RESPONSE)

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: OtlpSink


class OtlpSink:
    """``with OtlpSink() as sink:`` serves on ``sink.endpoint`` (an ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = self.spans = self.rejected = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.sink = self
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="otlp-sink", daemon=True)

    def _count(self, spans: int, rejected: bool = False) -> None:
        with self._lock:
            self.requests += 1
            self.spans += spans
            self.rejected += rejected

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
