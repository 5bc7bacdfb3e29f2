"""A real OTLP trace receiver for tests: OTLP/HTTP and OTLP/gRPC on 127.0.0.1.

Node processes export spans through the stock OpenTelemetry SDK exporters; point
them here with :meth:`OtlpReceiver.env` and read what arrived from its
:class:`~pytest_meshfabric.spanstore.SpanStore`::

    with OtlpReceiver() as receiver:
        subprocess.run(cmd, env={**os.environ, **receiver.env("grpc")})
        receiver.store.wait_for(lambda spans: len(spans) >= 2, description="two spans")
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from fabric.errors import ConfigError
from fabric.otlp import (MAX_BODY, PROTOBUF_TYPES, CapturedSpan, ExportRequest, OtlpBodyError, decode_body,
                         decode_request)
from pytest_meshfabric.spanstore import SpanStore, SpanWaitTimeout

__all__ = ["CapturedSpan", "OtlpReceiver", "SpanStore", "SpanWaitTimeout", "decode_request"]

_log = logging.getLogger(__name__)

PROTOCOLS = ("http/protobuf", "http/json", "grpc")


class _Reject(OtlpBodyError):
    """An HTTP-level refusal (size, transfer encoding) before the body is decoded."""


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("otlp http connection from %s failed", client_address, exc_info=True)

    def __init__(self, address: tuple[str, int], receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' sessions expect
    server: _HttpServer
    timeout = 60

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        _log.debug("otlp http %s: " + format, self.client_address[0], *args)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/traces":
            self.close_connection = True  # the body was not read
            self._reply(404, "text/plain", f"no OTLP endpoint at {self.path}; traces go to /v1/traces\n".encode())
            return
        receiver = self.server.receiver
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        try:
            raw = self._read_body()
            spans = decode_body(raw, ctype, self.headers.get("Content-Encoding", ""))
        except OtlpBodyError as exc:
            self._reject(exc.status, str(exc))
        except (ValueError, EOFError, OSError, zlib.error) as exc:
            self._reject(400, f"invalid OTLP trace export body ({ctype or 'no Content-Type'}): {exc}")
        else:
            receiver._accept(spans, raw, self.headers.get("Content-Type", ""), self.headers.get("Content-Encoding", ""))
            if ctype == "application/json":
                self._reply(200, "application/json", b"{}")
            else:
                resp = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self._reply(200, "application/x-protobuf", resp)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts, total = [], 0
            while size := int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16):
                total += size
                if total > MAX_BODY:
                    raise _Reject(413, f"body is over {MAX_BODY} bytes")
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError(f"negative Content-Length {length}")
        if length > MAX_BODY:
            raise _Reject(413, f"body of {length} bytes is over {MAX_BODY}")
        return self.rfile.read(length)

    def _reject(self, status: int, message: str) -> None:
        self.server.receiver._rejected(message)
        self.close_connection = True  # the body may be partly unread
        self._reply(status, "text/plain; charset=utf-8", (message + "\n").encode())

    def _reply(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


# -- OTLP/gRPC ---------------------------------------------------------------------


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: ExportRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            spans = decode_request(request)
        except ValueError as exc:
            message = f"invalid OTLP trace export request: {exc}"
            self._receiver._rejected(message)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        raw = request.SerializeToString() if self._receiver.forward_to else b""
        self._receiver._accept(spans, raw, PROTOBUF_TYPES[0], "")
        return trace_service_pb2.ExportTraceServiceResponse()


# -- the receiver ------------------------------------------------------------------


class OtlpReceiver:
    """OTLP/HTTP (and optionally OTLP/gRPC) trace receiver feeding a :class:`SpanStore`.

    Both servers run in background threads bound to ``host`` (ports 0 = ephemeral).
    With ``forward_to`` (an OTLP/HTTP traces URL such as
    ``http://127.0.0.1:4318/v1/traces``) every accepted export is re-posted there,
    best effort, from a background thread.
    """

    def __init__(
        self,
        store: SpanStore | None = None,
        grpc: bool = True,  # noqa: FBT001, FBT002 - public signature
        forward_to: str | None = None,
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int = 0,
    ) -> None:
        self.store = store if store is not None else SpanStore()
        self.forward_to = forward_to
        self._want_grpc = grpc
        self._host, self._http_port, self._grpc_port = host, http_port, grpc_port
        self._lock = threading.Lock()
        self.received = 0  # export requests that reached an endpoint
        self.rejected = 0  # of those, refused as malformed
        self.last_rejection: str | None = None
        self.forwarded = 0
        self.forward_failures = 0
        self._http: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: Any = None  # grpc.Server (the ``grpc`` parameter shadows the module here)
        self._forward_queue: queue.Queue[tuple[bytes, dict[str, str]] | None] = queue.Queue()
        self._forward_thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> OtlpReceiver:
        """Bind and start serving; returns ``self``."""
        if self._http is not None:
            return self
        self._http = _HttpServer((self._host, self._http_port), self)
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, args=(0.05,), name="otlp-http", daemon=True  # 0.05 s: quick stop()
        )
        self._http_thread.start()
        if self._want_grpc:
            server = grpc.server(
                ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"),
                options=[("grpc.max_receive_message_length", MAX_BODY), ("grpc.so_reuseport", 0)],
            )
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
            try:
                self._grpc_port = server.add_insecure_port(f"{self._host}:{self._grpc_port}")
            except RuntimeError:
                self.stop()
                raise
            server.start()
            self._grpc = server
        if self.forward_to:
            self._forward_thread = threading.Thread(target=self._forward_loop, name="otlp-forward", daemon=True)
            self._forward_thread.start()
        return self

    def stop(self) -> None:
        """Stop both servers, drop open connections and end the forwarder."""
        if self._http is not None:
            self._http.shutdown()
            with self._http.conn_lock:
                for conn in list(self._http.connections):
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
            self._http = self._http_thread = None
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(timeout=5)
            self._grpc = None
        if self._forward_thread is not None:
            self._forward_queue.put(None)
            self._forward_thread.join(timeout=5)
            self._forward_thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses --

    @property
    def http_endpoint(self) -> str:
        """Base URL of the OTLP/HTTP server (traces go to ``<base>/v1/traces``)."""
        if self._http is None:
            raise RuntimeError("OtlpReceiver is not running; call start() first")
        return f"http://{self._host}:{self._http.server_address[1]}"

    @property
    def grpc_endpoint(self) -> str:
        """URL of the OTLP/gRPC server, for exporters with ``insecure=True``."""
        if self._grpc is None:
            raise RuntimeError("OtlpReceiver has no running gRPC server (start() it with grpc=True)")
        return f"http://{self._host}:{self._grpc_port}"

    def env(self, protocol: str = "http/protobuf", *, bsp_schedule_delay_ms: int | None = None) -> dict[str, str]:
        """Standard ``OTEL_*`` variables that make a child process export here.

        ``protocol`` is ``"http/protobuf"``, ``"http/json"`` or ``"grpc"``. With
        ``bsp_schedule_delay_ms`` the batch span processor flushes that often.
        """
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown OTLP protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        grpc_wanted = protocol == "grpc"
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.grpc_endpoint if grpc_wanted else self.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
        if grpc_wanted:
            env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
        if bsp_schedule_delay_ms is not None:
            env["OTEL_BSP_SCHEDULE_DELAY"] = str(bsp_schedule_delay_ms)
        return env

    # -- called from server threads --

    def _accept(self, spans: list[CapturedSpan], raw: bytes, ctype: str, encoding: str) -> None:
        with self._lock:
            self.received += 1
        self.store.add(spans)
        if self._forward_thread is not None:  # re-post the body exactly as it came
            headers = {"Content-Type": ctype or PROTOBUF_TYPES[0]}
            if encoding:
                headers["Content-Encoding"] = encoding
            self._forward_queue.put((raw, headers))

    def _rejected(self, message: str) -> None:
        _log.warning("rejected OTLP export: %s", message)
        with self._lock:
            self.received += 1
            self.rejected += 1
            self.last_rejection = message

    def _forward_loop(self) -> None:
        assert self.forward_to
        while (item := self._forward_queue.get()) is not None:
            body, headers = item
            try:
                req = urllib.request.Request(self.forward_to, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - URL given by the test
                    resp.read()
                with self._lock:
                    self.forwarded += 1
            except Exception as exc:  # noqa: BLE001 - best effort, counted
                _log.debug("forwarding OTLP export to %s failed: %s", self.forward_to, exc)
                with self._lock:
                    self.forward_failures += 1

