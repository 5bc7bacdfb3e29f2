"""OpenTelemetry for a node: the tracer provider, its exporter, its ring of recent spans.

Telemetry is the floor: every unit of work a node does is a span. Spans leave the node through
the SDK's OTLP exporter, configured only by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` / ``..._TRACES_PROTOCOL`` = ``http/protobuf`` or ``grpc``), so
any collector or Jaeger receives them unchanged. With none set, nothing is exported and
nothing is printed: spans stay in the node's ring of recent spans (``Telemetry.recent``).
To a collector on loopback over plain HTTP, a node posts its batches from its own event loop
(``fabric/otlp_loop.py``: no export thread); elsewhere the SDK's batch processor does.
Trace context on the wire is ``fabric/propagation.py``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import (TELEMETRY_SDK_LANGUAGE, TELEMETRY_SDK_NAME, TELEMETRY_SDK_VERSION,
                                         OTELResourceDetector, Resource)
from opentelemetry.sdk.version import __version__ as _SDK_VERSION
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from .errors import ConfigError
from .spans import LeanTracer, OffTracer

TRACER_NAME = "meshfabric"
log = logging.getLogger(__name__)
_DEFAULT_SCHEDULE_DELAY_MS = 200  # the SDK's 5 s default hides a boot trace for too long


@dataclass(frozen=True)
class NodeLabels:
    """The attributes every span of a node carries."""

    name: str
    mesh: str
    type: str
    node_id: str

    def attributes(self) -> dict[str, str]:
        return {"mesh.id": self.mesh, "node.type": self.type, "node.id": self.node_id}


class PrivateRandomIdGenerator(IdGenerator):
    """Trace and span ids from a generator of our own, not the ``random`` module's global one.

    The SDK's default draws ids from the global ``random``, which anything in the process may
    seed: hypothesis re-seeds it for every example, so a test process produced the same trace
    ids again and again and unrelated requests landed in one trace.
    """

    def __init__(self) -> None:
        self._random = random.Random(int.from_bytes(os.urandom(16), "big"))
        # ``random_bits(k)``: k random bits, 0 included (an invalid id), for a caller that draws
        # again on 0 itself: the spans' C part, without a Python call a span (``spans.LeanTracer``)
        self.random_bits = self._random.getrandbits

    def generate_span_id(self) -> int:
        span_id = self._random.getrandbits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = self._random.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = self._random.getrandbits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = self._random.getrandbits(128)
        return trace_id


RECENT_SPANS_ENV = "MESHFABRIC_RECENT_SPANS"
DEFAULT_RECENT_SPANS = 256


class RecentSpans(SpanProcessor):
    """Keeps the last ``capacity`` finished spans in memory (for the control socket's ``spans``).

    No lock: a bounded deque's ``append`` and ``list(deque)`` each run in C under the GIL.

    Small on purpose: every span in the ring is ~1 KB kept alive, and a new span reuses the
    memory of the one that left the ring, cold in the CPU's caches when the ring is large.
    Interleaved under load (32 produces in flight, CPU per record in each process): a ring of
    2,048 cost ~8-11 µs a record in the gateway and the broker each over one of 256 (which is
    within ~1 µs of 16); throughput with every span recorded 6,192 against 6,968 records/s,
    with the SDK off 7,567.
    """

    def __init__(self, capacity: int = DEFAULT_RECENT_SPANS) -> None:
        self._spans: collections.deque[ReadableSpan] = collections.deque(maxlen=capacity)
        self.on_end = self._spans.append  # type: ignore[method-assign]  # one call less a span

    def on_end(self, span: ReadableSpan) -> None:
        self._spans.append(span)

    def snapshot(self) -> list[ReadableSpan]:
        return list(self._spans)


def sdk_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether spans are recorded at all: ``OTEL_SDK_DISABLED=true`` (the standard switch) makes
    every span a no-op."""
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def export_protocol(environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP protocol a node exports its spans over, as the standard variables set it, or
    ``None`` when they ask for no export."""
    if not (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "otlp") == "none":
        return None
    return (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")


def exporter_from_env(environ: Mapping[str, str] = os.environ) -> SpanExporter | None:
    """The OTLP exporter the standard variables ask for, or ``None`` when none is set."""
    protocol = export_protocol(environ)
    if protocol is None:
        return None
    from . import otlp_encoder, otlp_exporters, otlp_transport  # protobuf: loaded only by a node that exports

    encoder = otlp_exporters.encoder_from_env(environ)
    own_encoder = encoder != "sdk"
    otlp_encoder.use_native(encoder == "own")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        transport = otlp_transport.http_transport(environ)  # urllib3 for a loopback collector, else None
        if own_encoder:
            otlp_exporters.adopt_in_http_exporter()
        return OTLPSpanExporter() if transport is None else OTLPSpanExporter(_transport=transport)
    if protocol == "grpc":
        otlp_transport.choice_from_env(environ)  # only HTTP has a transport to choose; a bad value is an error still
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        if own_encoder:
            otlp_exporters.adopt_in_grpc_exporter()
        return GrpcExporter()
    raise ConfigError(
        f"unsupported OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}: use 'http/protobuf' or 'grpc'"
    )


def export_processor(exporter: SpanExporter, environ: Mapping[str, str] = os.environ) -> SpanProcessor:
    """What sends a node's spans to ``exporter``: a processor on the node's own loop where it
    sends what the SDK's would (its OTLP/HTTP exporter to a plain loopback collector:
    ``otlp_loop.choose``), else the SDK's ``BatchSpanProcessor`` and its thread."""
    from . import otlp_loop  # h11: loaded only by a node that exports

    delay = None if "OTEL_BSP_SCHEDULE_DELAY" in environ else _DEFAULT_SCHEDULE_DELAY_MS
    http = sys.modules.get("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    url = getattr(exporter, "_endpoint", None)  # the URL the SDK's exporter resolved from the variables
    if http is not None and isinstance(exporter, http.OTLPSpanExporter) and isinstance(url, str) \
            and otlp_loop.choose(url, environ):
        def encode(spans: Sequence[ReadableSpan]) -> bytes:
            return http.encode_spans(spans).SerializePartialToString()  # ours, once adopted (otlp_encoder)

        return otlp_loop.LoopBatchSpanProcessor(url, exporter, encode, environ, schedule_delay_ms=delay)
    return BatchSpanProcessor(exporter, schedule_delay_millis=delay)


def recent_capacity_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """How many recent spans a node keeps for its control socket: ``MESHFABRIC_RECENT_SPANS``
    (an integer >= 1), else 256."""
    raw = environ.get(RECENT_SPANS_ENV, "").strip()
    if not raw:
        return DEFAULT_RECENT_SPANS
    try:
        capacity = int(raw)
    except ValueError:
        capacity = 0
    if capacity < 1:
        raise ConfigError(f"{RECENT_SPANS_ENV}={raw!r}: expected an integer >= 1 "
                          f"(the recent spans a node keeps; default {DEFAULT_RECENT_SPANS})")
    return capacity


def base_resource() -> Resource:
    """The SDK's default resource and ``OTEL_RESOURCE_ATTRIBUTES`` (what ``Resource.create``
    builds for the default detector, without the thread pool it starts to run detectors:
    ~3 ms of a ~5 ms boot), with a new ``service.instance.id``; a node adds its labels."""
    detected = OTELResourceDetector().detect()
    return Resource({TELEMETRY_SDK_LANGUAGE: "python", TELEMETRY_SDK_NAME: "opentelemetry",
                     TELEMETRY_SDK_VERSION: _SDK_VERSION, "service.instance.id": str(uuid.uuid4()),
                     **detected.attributes}, detected.schema_url)


def node_resource(labels: NodeLabels, base: Resource | None = None) -> Resource:
    """``base`` (default: ``base_resource()``), then the node's own labels: what ``merge``
    would give (later keys win), validated once."""
    base = base or base_resource()
    return Resource({**base.attributes, "service.name": labels.name, **labels.attributes()}, base.schema_url)


class TelemetrySetup:
    """A node's telemetry but its name, read from the environment before the boot: whether the
    SDK is on, the span limits, the ids' generator, the resource's attributes but the node's
    own, the ring of recent spans and the exporter's processor (its modules imported).
    ``Telemetry`` adds the name once the node knows its identity; a node makes its setup when
    it is made, as any program sets up OpenTelemetry before the work it traces, so none of
    this runs, cold, inside the boot's trace. One setup serves one ``Telemetry``.
    """

    def __init__(self, exporter: SpanExporter | None = None, recent_capacity: int = DEFAULT_RECENT_SPANS) -> None:
        # OTEL_SDK_DISABLED=true (the standard switch) makes every span a no-op (``OffTracer``,
        # the API's, cheaper): the benchmarks measure what tracing costs by comparing against it.
        self.enabled = sdk_enabled()
        self.span_limits = SpanLimits()
        self.id_generator = PrivateRandomIdGenerator()
        self.resource = base_resource()
        self.recent = RecentSpans(recent_capacity)
        self.span_exporter = exporter
        self.exporter = export_processor(exporter) if exporter is not None and self.enabled else None
        self.used = False  # its ring and processor belong to the one Telemetry made from it

    @classmethod
    def from_env(cls) -> TelemetrySetup:
        """The exporter the standard variables ask for (``ConfigError`` for a bad one) and the ring's size."""
        return cls(exporter_from_env(), recent_capacity_from_env())

    def shutdown(self) -> None:
        """Shut the exporter's processor down (the SDK's has a thread) where no ``Telemetry``
        took it: a node made and stopped unstarted, or whose telemetry could not be made.
        A ``Telemetry``'s own ``shutdown`` does it for the setup it was made from."""
        if not self.used and self.exporter is not None:
            self.exporter.shutdown()
        self.used = True  # nothing may take the processor now


class Telemetry:
    """A node's tracer provider: resource = the node's name and labels. Made from ``setup``
    (then ``exporter`` and ``recent_capacity`` are the setup's), or from those two now."""

    def __init__(self, labels: NodeLabels, exporter: SpanExporter | None = None,
                 recent_capacity: int = DEFAULT_RECENT_SPANS, *, setup: TelemetrySetup | None = None) -> None:
        setup = setup or TelemetrySetup(exporter, recent_capacity)
        if setup.used:
            raise ValueError("this TelemetrySetup has made its Telemetry already, or was shut down (its ring "
                             "and exporter go with it): make a new setup")
        self.labels = labels
        self.enabled = setup.enabled
        self.provider = TracerProvider(resource=node_resource(labels, setup.resource),
                                       id_generator=setup.id_generator, span_limits=setup.span_limits)
        self.recent = setup.recent
        self.provider.add_span_processor(self.recent)
        self.span_exporter = setup.span_exporter
        self.exporter: SpanProcessor | None = setup.exporter  # what hands spans to the exporter
        self.exporting = self.exporter is not None
        self.loop_exporter: Any = None  # the same, if it posts from the node's loop (otlp_loop)
        if self.exporter is not None:
            from .otlp_loop import LoopBatchSpanProcessor  # loaded already: the setup's processor came from it

            self.provider.add_span_processor(self.exporter)
            if isinstance(self.exporter, LoopBatchSpanProcessor):
                self.loop_exporter = self.exporter
        self.tracer: trace.Tracer = (LeanTracer(self.provider, TRACER_NAME, labels.attributes())
                                     if self.enabled else OffTracer())
        setup.used = True  # only once made: a failed Telemetry leaves the setup's shutdown its processor

    @classmethod
    def from_env(cls, labels: NodeLabels) -> "Telemetry":
        return cls(labels, setup=TelemetrySetup.from_env())

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Export from ``loop`` (the node's) where the exporter does (``fabric/otlp_loop.py``);
        call it on the loop's thread."""
        if self.loop_exporter is not None:
            self.loop_exporter.attach(loop)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """On the loop: post every span ended so far (waiting out a post in flight), for at
        most ``timeout_s``; a no-op where the SDK's thread exports (``flush`` serves it)."""
        if self.loop_exporter is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self.loop_exporter.flush()
        except TimeoutError:
            log.warning("spans not exported within %gs of stopping: the collector at %s does not answer",
                        timeout_s, self.loop_exporter.url)

    def export_status(self) -> dict[str, Any] | None:
        """How this node's spans leave it (``None``: they do not): from its event loop, with
        the batches posted and the spans lost so far, or through the SDK's thread; and which
        encoder writes them (``otlp_exporters.in_use``)."""
        if self.exporter is None:
            return None
        from . import otlp_exporters

        encoder = otlp_exporters.in_use(sys.modules[type(self.span_exporter).__module__])
        if self.loop_exporter is None:
            return {"via": "SDK thread", "encoder": encoder}
        loop = self.loop_exporter
        return {"via": "event loop", "encoder": encoder, "url": loop.url, "posts": loop.posts,
                "dropped": loop.dropped, "failed": loop.failed}

    def flush(self, timeout_s: float = 5.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """A plain-value view of a finished span (ids in hex, times in ns)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
