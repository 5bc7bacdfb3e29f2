"""The console's web app (aiohttp): the page, its JSON API, live events and the OTLP endpoint.

    GET  /                        the page; its assets under /static/ ship in the package
    GET  /api                     this list
    GET  /api/status              the console node's status and the console's counters
    GET  /api/directory           the directory       ?mesh= &q= &offset= &limit=
    GET  /api/events              server-sent events: a directory snapshot every push interval
    GET  /api/topology            swim-lanes (one per mesh) and the edges seen in spans
    GET  /api/traces              trace summaries, newest first   ?service= &name= &offset= &limit=
    GET  /api/traces/{trace_id}   one trace's spans, for the waterfall
    POST /v1/traces               OTLP/HTTP trace export (protobuf or JSON), as to any collector
    POST /api/actions/produce     produce a record {topic, value, to?}: off unless --console-token

Every error is JSON ``{"error": message, "status": code}`` with a 4xx (or 500) status, never a
traceback page. The console is read-only unless started with a token.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from opentelemetry.trace import SpanKind

from ...errors import ConfigError, FabricError, ResolveError
from ...identity import is_mesh_label
from .store import span_dict
from .topology import layout

if TYPE_CHECKING:
    from .service import ConsoleService

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_REQUEST_BYTES = 16 * 1024 * 1024
MAX_PAGE = 500
MAX_TEXT = 200
MAX_EVENT_STREAMS = 64
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}
CONSOLE: web.AppKey[ConsoleService] = web.AppKey("console")
CLOSING: web.AppKey[asyncio.Event] = web.AppKey("closing", asyncio.Event)
STREAMS: web.AppKey[set] = web.AppKey("streams", set)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


class ApiError(Exception):
    """A request the console refuses: answered with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


# -- middleware -----------------------------------------------------------------


def _explain(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"nothing at {request.path}: the page is at /, the API under /api (GET /api lists it)"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"the request body is over {MAX_REQUEST_BYTES} bytes"
    return exc.reason


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Turn every failure into a JSON error: aiohttp's own (404, 405, 413) and unexpected ones."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, _explain(request, exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("console: %s %s failed", request.method, request.path)
        return error_response(500, "internal error in the console; the console node's log has the details")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_guard(loopback_only: bool):
    """On loopback, answer only requests addressed to a local name (a guard against DNS rebinding)."""
    @web.middleware
    async def guard(request: web.Request, handler):
        if loopback_only and request.url.host not in LOCAL_NAMES | {None}:
            raise ApiError(403, f"this console answers only requests for localhost or 127.0.0.1, not "
                             f"{request.host!r}; start it with --console-host to serve other names")
        return await handler(request)
    return guard


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api"):
        response.headers["Cache-Control"] = "no-store"


# -- query parameters -------------------------------------------------------------


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be a whole number from {low} to {high}, got {raw[:40]!r}")
    return value


def text_param(request: web.Request, name: str) -> str:
    raw = request.query.get(name, "").strip()
    if len(raw) > MAX_TEXT:
        raise ApiError(400, f"'{name}' is {len(raw)} characters long; the limit is {MAX_TEXT}")
    return raw


def page(request: web.Request, default_limit: int) -> tuple[int, int]:
    return (int_param(request, "offset", 0, 0, 10**9),
            int_param(request, "limit", default_limit, 1, MAX_PAGE))


# -- handlers -------------------------------------------------------------------------


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def api_index(request: web.Request) -> web.Response:
    lines = [line.strip() for line in (__doc__ or "").splitlines() if line.strip().startswith(("GET", "POST"))]
    return web.json_response({"routes": lines})


async def status(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    return web.json_response({"node": console.node.status(), "console": console.describe()})


async def directory(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    mesh, query = text_param(request, "mesh"), text_param(request, "q").lower()
    if mesh and not is_mesh_label(mesh):
        raise ApiError(400, f"'mesh' must be a mesh label such as mesh1, got {mesh!r}")
    offset, limit = page(request, 100)
    entries = [e for e in console.directory()
               if (not mesh or e["mesh"] == mesh)
               and (not query or query in " ".join((e["name"], e["type"], *e["addrs"])).lower())]
    return web.json_response({"name": console.node.name, "total": len(entries),
                              "entries": entries[offset:offset + limit]})


def snapshot(console: ConsoleService, seq: int) -> dict[str, Any]:
    """What each live page gets every push interval."""
    return {"seq": seq, "node": console.node.name, "directory": console.directory(),
            "spans": {"count": len(console.store), "traces": console.store.trace_count,
                      "version": console.store.version},
            "edges_version": console.edges.version}


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``snapshot`` messages until the page goes away or the node stops."""
    console, streams = request.app[CONSOLE], request.app[STREAMS]
    if len(streams) >= MAX_EVENT_STREAMS:
        raise ApiError(503, f"{MAX_EVENT_STREAMS} pages are already following this console; close one")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(request)
    closing, seq = request.app[CLOSING], 0
    streams.add(response)
    try:
        await response.write(b"retry: 1000\n\n")
        while not closing.is_set():
            seq += 1
            data = json.dumps(snapshot(console, seq), separators=(",", ":"))
            await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
            try:
                await asyncio.wait_for(closing.wait(), console.push_interval)
            except TimeoutError:
                pass
    except ConnectionError:
        pass  # the page went away
    finally:
        streams.discard(response)
    return response


async def topology(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    view = layout(console.directory(), console.edges.edges(), console.node.name)
    return web.json_response({**view, "edges_version": console.edges.version})


async def traces(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    service, name = text_param(request, "service"), text_param(request, "name")
    offset, limit = page(request, 50)
    total, found = console.store.search(service, name, offset, limit)
    return web.json_response({"total": total, "offset": offset, "limit": limit, "traces": found,
                              "version": console.store.version})


async def trace(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    trace_id = request.match_info["trace_id"].lower()
    if not TRACE_ID.fullmatch(trace_id):
        raise ApiError(400, f"a trace id is 32 hex digits, got {trace_id[:64]!r}")
    spans = console.store.trace(trace_id)
    if spans is None:
        raise ApiError(404, f"trace {trace_id} is not in this console (it keeps the last "
                         f"{console.store.max_spans} spans)")
    return web.json_response({"summary": console.store.summary(trace_id), "spans": [span_dict(s) for s in spans]})


async def otlp_traces(request: web.Request) -> web.Response:
    """The OTLP/HTTP trace receiver: what any exporter posts to ``<endpoint>/v1/traces``."""
    # Loaded with the first export (protobuf, ~2.5 MB): a console that is sent none does without.
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    from ...otlp import OtlpBodyError

    console = request.app[CONSOLE]
    ctype = request.headers.get("Content-Type", "")
    body = await request.read()
    try:
        await console.collector.ingest(body, ctype, request.headers.get("Content-Encoding", ""))
    except OtlpBodyError as exc:
        raise ApiError(exc.status, exc.message) from None
    except (ValueError, EOFError, zlib.error) as exc:
        raise ApiError(400, f"invalid OTLP trace export body ({ctype or 'no Content-Type'}): {exc}") from None
    if ctype.split(";")[0].strip().lower() == "application/json":
        return web.json_response({})
    return web.Response(body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                        content_type="application/x-protobuf")


# -- actions (off unless a token is configured) ------------------------------------------


def authorize(request: web.Request) -> None:
    token = request.app[CONSOLE].token
    if token is None:
        raise ApiError(403, "this console is read-only: actions that change the cluster are off. "
                         "Start the console node with --console-token TOKEN to enable them")
    given = request.headers.get("Authorization", "")
    if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
        raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <the --console-token>'")


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


async def produce(request: web.Request) -> web.Response:
    """Produce one record as the console node: ``{"topic", "value", "to"?}``."""
    authorize(request)
    console, body = request.app[CONSOLE], await json_body(request)
    topic, value, to = body.get("topic"), body.get("value"), body.get("to") or None
    if not isinstance(topic, str) or not isinstance(value, str) or not (to is None or isinstance(to, str)):
        raise ApiError(400, "'topic' and 'value' must be strings, 'to' a node name, <mesh>.<type> or absent")
    with console.node.telemetry.tracer.start_as_current_span(
            "console.produce", kind=SpanKind.SERVER, attributes={"messaging.destination.name": topic}):
        try:
            ack = await console.node.frontdoor.produce(topic, value.encode(), to)
        except ResolveError as exc:
            raise ApiError(404, str(exc)) from None
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        except FabricError as exc:
            raise ApiError(502, f"the produce failed: {exc}") from None
    return web.json_response(ack)


# -- the app ---------------------------------------------------------------------------


def build_app(console: ConsoleService) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES,
                          middlewares=[json_errors, host_guard(is_loopback(console.host))])
    app[CONSOLE] = console
    app[CLOSING] = asyncio.Event()
    app[STREAMS] = set()
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/api", api_index)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/directory", directory)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/topology", topology)
    app.router.add_get("/api/traces", traces)
    app.router.add_get("/api/traces/{trace_id}", trace)
    app.router.add_post("/v1/traces", otlp_traces)
    app.router.add_post("/api/actions/produce", produce)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    return app


async def _on_shutdown(app: web.Application) -> None:
    app[CLOSING].set()  # open event streams end their loop
