"""Which encoder the SDK's OTLP span exporters use: chosen from the environment, put in
place, reported.

The exporters themselves (HTTP transport, retries, compression, gRPC channel, metrics) stay
the SDK's. Each of the SDK's span exporter modules calls its module-level ``encode_spans`` to
encode a batch (the HTTP one serializes the result, the gRPC one hands the message to its
stub); ``adopt_in_http_exporter`` and ``adopt_in_grpc_exporter`` point that name at
``fabric.otlp_encoder``, for the whole process, and leave alone a name that is not the SDK's
encoder (a newer SDK's, another patch's). ``fabric.telemetry.exporter_from_env`` does so unless
``MESHFABRIC_OTLP_ENCODER`` is ``sdk`` (``own``, the default, uses ``otlp_encoder`` with its C
part; ``python``, without it); a node's status names the one in use (``in_use``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from . import otlp_encoder
from .errors import ConfigError

log = logging.getLogger(__name__)

ENCODER_ENV = "MESHFABRIC_OTLP_ENCODER"
ENCODERS = ("own", "python", "sdk")


def encoder_from_env(environ: Mapping[str, str]) -> str:
    """Which encoder a node's OTLP exporter uses: ``own`` (``otlp_encoder``, the default, with
    its C part where it was built), ``python`` (``otlp_encoder`` without it) or ``sdk``."""
    chosen = environ.get(ENCODER_ENV, "").strip() or "own"
    if chosen not in ENCODERS:
        raise ConfigError(f"{ENCODER_ENV}={chosen!r}: use 'own' (the default), 'python' or 'sdk'")
    return chosen


def in_use(module: ModuleType) -> str | None:
    """Which encoder the span exporter ``module`` uses: ``C`` (``otlp_encoder``, the common case
    of a span in C), ``Python`` (``otlp_encoder`` in Python), ``SDK`` (the SDK's own), or ``None`` for
    an exporter that does not encode through ``encode_spans`` (not one of the SDK's OTLP ones)."""
    current = getattr(module, "encode_spans", None)
    if current is None:
        return None
    if current not in (EncodedRequest, _request_message):
        return "SDK"
    return "C" if otlp_encoder.native_in_use() else "Python"


class EncodedRequest:
    """What the SDK's OTLP/HTTP span exporter asks of ``encode_spans(spans)``: the bytes."""

    __slots__ = ("data",)

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.data = otlp_encoder.encode_request(spans)

    def SerializePartialToString(self, **_: Any) -> bytes:  # protobuf's name
        return self.data

    SerializeToString = SerializePartialToString


def _request_message(spans: Sequence[ReadableSpan]) -> Any:
    """The request as the protobuf message the SDK's gRPC exporter hands its stub (parsing
    the bytes, in C, costs ~0.5 µs a span against the SDK's ~30 µs of building it)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    return ExportTraceServiceRequest.FromString(otlp_encoder.encode_request(spans))


def _adopt(module: ModuleType, ours: Any) -> bool:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
        encode_spans as sdk_encode_spans,
    )

    current = getattr(module, "encode_spans", None)
    if current is ours:
        return True
    if current is not sdk_encode_spans:  # not the code this was written against: leave it
        log.warning("%s.encode_spans is not the SDK's encoder: spans exported with it", module.__name__)
        return False
    module.encode_spans = ours  # type: ignore[attr-defined]
    return True


def adopt_in_http_exporter() -> bool:
    """Make the SDK's OTLP/HTTP span exporter encode with ``otlp_encoder.encode_request``."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    return _adopt(trace_exporter, EncodedRequest)


def adopt_in_grpc_exporter() -> bool:
    """Make the SDK's OTLP/gRPC span exporter encode with ``otlp_encoder.encode_request``."""
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter

    return _adopt(trace_exporter, _request_message)
