"""The OTLP trace wire format: export requests (protobuf or JSON, maybe compressed) to spans.

Shared by everything that receives spans the way a collector does: the console node and the
test harness's receiver. ``decode_body`` is the whole pipeline; ``OtlpBodyError`` carries the
HTTP status a receiver should answer with. Importing this module loads protobuf; the span type
itself lives in ``fabric.captured`` (re-exported here), which does not.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from .captured import CapturedSpan

__all__ = ["MAX_BODY", "PROTOBUF_TYPES", "CapturedSpan", "ExportRequest", "OtlpBodyError", "decode_body",
           "decode_request"]

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
MAX_BODY = 64 * 1024 * 1024  # bytes, before and after decompression
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")


class OtlpBodyError(Exception):
    """A request body that is not a valid OTLP export; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_SCALAR_VALUES = frozenset(("string_value", "bool_value", "int_value", "double_value", "bytes_value"))


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind in _SCALAR_VALUES:
        return getattr(v, kind)
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    return None if kind is None else getattr(v, kind)


def _attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        value = kv.value
        kind = value.WhichOneof("value")  # the scalars inline: most attributes are one
        out[kv.key] = getattr(value, kind) if kind in _SCALAR_VALUES else _value(value)
    return out


def _hex_id(raw: bytes, size: int, what: str) -> str:
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw.hex()


def _check_ids(trace_id: bytes, span_id: bytes, parent: bytes) -> None:
    if len(trace_id) != 16 or len(span_id) != 8 or (parent and len(parent) != 8):
        _hex_id(trace_id, 16, "trace_id")
        _hex_id(span_id, 8, "span_id")
        _hex_id(parent, 8, "parent_span_id")


def _enum_names(enum: Any, prefix: str) -> dict[int, str]:
    return {number: name.removeprefix(prefix) for name, number in enum.items()}


_KIND_NAMES = _enum_names(trace_pb2.Span.SpanKind, "SPAN_KIND_")
_STATUS_NAMES = _enum_names(trace_pb2.Status.StatusCode, "STATUS_CODE_")


def decode_request(request: ExportRequest) -> list[CapturedSpan]:
    """Flatten an ``ExportTraceServiceRequest`` into spans; ``ValueError`` on bad ids.

    An enum value newer than our protos keeps its number (as a string)."""
    spans = []
    for rs in request.resource_spans:
        resource = _attrs(rs.resource.attributes)
        service = str(resource.get("service.name", ""))
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for sp in ss.spans:
                trace_id, span_id, parent, status = sp.trace_id, sp.span_id, sp.parent_span_id, sp.status
                _check_ids(trace_id, span_id, parent)
                spans.append(
                    CapturedSpan(
                        trace_id=trace_id.hex(),
                        span_id=span_id.hex(),
                        parent_span_id=parent.hex() if parent else None,
                        name=sp.name,
                        kind=_KIND_NAMES.get(sp.kind) or str(sp.kind),
                        start_ns=sp.start_time_unix_nano,
                        end_ns=sp.end_time_unix_nano,
                        status=_STATUS_NAMES.get(status.code) or str(status.code),
                        status_message=status.message,
                        attributes=_attrs(sp.attributes),
                        resource=resource,
                        service_name=service,
                        events=[(e.name, _attrs(e.attributes)) for e in sp.events] if sp.events else [],
                        links=[(_hex_id(ln.trace_id, 16, "link trace_id"), _hex_id(ln.span_id, 8, "link span_id"))
                               for ln in sp.links] if sp.links else [],
                        scope=scope,
                    )
                )
    return spans


def _parse_json(body: bytes) -> ExportRequest:
    """Parse OTLP/JSON, whose ids are hex where proto3 JSON expects base64."""
    doc = json.loads(body)
    for rs in doc.get("resourceSpans", doc.get("resource_spans", [])):
        for ss in rs.get("scopeSpans", rs.get("scope_spans", [])):
            for sp in ss.get("spans", []):
                for obj in (sp, *sp.get("links", [])):
                    for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                        if isinstance(obj.get(key), str):
                            obj[key] = base64.b64encode(bytes.fromhex(obj[key])).decode()
    return json_format.ParseDict(doc, ExportRequest(), ignore_unknown_fields=True)


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity", "none"):
        return body
    if encoding == "gzip":
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif encoding == "deflate":  # zlib-wrapped as the SDKs send it, or raw deflate
        d = zlib.decompressobj(zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS)
    else:
        raise OtlpBodyError(415, f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    data = d.decompress(body, MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise OtlpBodyError(413, f"decompressed body is over {MAX_BODY} bytes")
    if not d.eof:
        raise ValueError(f"truncated {encoding} stream")
    return data



def decode_body(body: bytes, content_type: str, encoding: str = "") -> list[CapturedSpan]:
    """Decompress, parse and flatten one OTLP/HTTP trace export body."""
    data = _decompress(body, encoding.strip().lower())
    ctype = content_type.split(";")[0].strip().lower()
    try:
        if ctype in PROTOBUF_TYPES:
            request = ExportRequest.FromString(data)
        elif ctype == "application/json":
            request = _parse_json(data)
        else:
            raise OtlpBodyError(415, f"unsupported Content-Type {ctype!r}; use application/x-protobuf or application/json")
        return decode_request(request)
    except (DecodeError, ValueError, KeyError, TypeError, json_format.ParseError) as exc:
        raise OtlpBodyError(400, f"invalid OTLP trace export body ({ctype}): {exc}") from None
