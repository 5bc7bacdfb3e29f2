"""OTLP trace export requests, encoded straight to protobuf bytes.

The SDK's OTLP exporters encode a batch by building a protobuf message object for every span,
attribute and value (``encode_spans``), and group spans by resource through
``Resource.__hash__``, a JSON dump of the resource per span. Measured in a node under load
with every span exported, that encoding was most of the export thread's time (~30 µs a span;
a gateway spent ~130 µs more CPU a record than with spans kept in its ring only), on cores the
node's own work needs. This encoder: ~3.9 µs a span on the same spans in Python, ~0.7 µs with
its C part writing span by span, ~0.23 µs where it writes each run of a node's own spans from
their C fields at once (``_span_wire.lean_fields``; ~1.35 µs a span inside a loaded node against
~2.2 span by span: docs/performance-rounds.md, fifteenth round).

``encode_request(spans)`` writes the same ``ExportTraceServiceRequest`` (the same fields and
values, the same grouping by resource and instrumentation scope, the same handling of
attributes the SDK cannot encode: dropped and logged) directly in the protobuf wire format,
with the parts that repeat across spans (a node's resource, its scope, attribute keys and
string values) encoded once. A span as a node's tracer makes it (a ``LeanSpan``: no trace
state, events or links, status unset, attributes of str, bool, int and float) is written by
``fabric/_span_wire.c`` where the install built it (an optional extension: without a compiler
the install goes on, and this module writes the same bytes in Python); any other span, or one
with an attribute the C part leaves to Python, is written here. ``tests/fabric/test_otlp_encoder.py``
compares it with the SDK's encoder, message by message, and the C part with the Python one,
byte by byte. ``fabric/otlp_exporters.py`` puts it in the SDK's exporters.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import DEFAULT_TRACE_STATE, SpanContext, SpanKind
from opentelemetry.trace.status import Status

from .lean_span import FIELDS_IN_C, UNSET_STATUS, LeanSpan
from .span_path import CONTEXT_IS_TUPLE

log = logging.getLogger(__name__)

try:  # the common case of a span, in C (fabric/_span_wire.c), where the install could build it
    from . import _span_wire
except ImportError:
    _span_wire = None  # type: ignore[assignment]
_built_span_field = _span_wire.span_field if _span_wire is not None else None
_usable_span_field = _built_span_field if CONTEXT_IS_TUPLE else None  # it reads span contexts as tuples
_native_span_field = _usable_span_field  # None while the C part is not used (``use_native``)
# A run of a node's own spans, read from their C fields (where LeanSpan's fields are in C too)
if _usable_span_field is not None and FIELDS_IN_C is not None:
    _span_wire.configure_lean(LeanSpan, FIELDS_IN_C, UNSET_STATUS, DEFAULT_TRACE_STATE, tuple(SpanKind))
    _usable_lean_fields = _span_wire.lean_fields
else:
    _usable_lean_fields = None
_native_lean_fields = _usable_lean_fields
_UNSEEN = object()

_HAS_IS_REMOTE = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_INT64 = range(-(1 << 63), 1 << 63)
_UINT64_MASK = (1 << 64) - 1  # a negative int64 is sent as its two's complement
_SMALL = [bytes((i,)) for i in range(128)]  # the varints of 0-127: one byte each
_CACHE_LIMIT = 4096  # encoded key-values kept; cleared when full (values that never repeat)


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


# Tags (field number << 3 | wire type), by message.
_REQUEST_RESOURCE_SPANS = b"\x0a"
_RS_RESOURCE, _RS_SCOPE_SPANS, _RS_SCHEMA = b"\x0a", b"\x12", b"\x1a"
_SS_SCOPE, _SS_SPAN, _SS_SCHEMA = b"\x0a", b"\x12", b"\x1a"
_SCOPE_NAME, _SCOPE_VERSION, _SCOPE_ATTRIBUTE = b"\x0a", b"\x12", b"\x1a"
_RESOURCE_ATTRIBUTE = b"\x0a"
_KV_KEY, _KV_VALUE = b"\x0a", b"\x12"
_ANY_STRING, _ANY_BOOL, _ANY_INT, _ANY_DOUBLE = b"\x0a", b"\x10", b"\x18", b"\x21"
_ANY_ARRAY, _ANY_KVLIST, _ANY_BYTES = b"\x2a", b"\x32", b"\x3a"
_ARRAY_VALUE = b"\x0a"  # ArrayValue.values and KeyValueList.values: both field 1
_SPAN_TRACE_ID, _SPAN_ID, _SPAN_TRACE_STATE, _SPAN_PARENT = b"\x0a\x10", b"\x12\x08", b"\x1a", b"\x22\x08"
_SPAN_NAME, _SPAN_KIND, _SPAN_START, _SPAN_END = b"\x2a", b"\x30", b"\x39", b"\x41"
_SPAN_ATTRIBUTE, _SPAN_DROPPED_ATTRIBUTES, _SPAN_EVENT, _SPAN_DROPPED_EVENTS = b"\x4a", b"\x50", b"\x5a", b"\x60"
_SPAN_LINK, _SPAN_DROPPED_LINKS, _SPAN_STATUS, _SPAN_FLAGS = b"\x6a", b"\x70", b"\x7a", b"\x85\x01"
_EVENT_TIME, _EVENT_NAME, _EVENT_ATTRIBUTE, _EVENT_DROPPED = b"\x09", b"\x12", b"\x1a", b"\x20"
_LINK_TRACE_ID, _LINK_SPAN_ID, _LINK_ATTRIBUTE, _LINK_DROPPED, _LINK_FLAGS = (
    b"\x0a\x10", b"\x12\x08", b"\x22", b"\x28", b"\x35")
_STATUS_MESSAGE, _STATUS_CODE = b"\x12", b"\x18"
_PACK_FIXED64 = struct.Struct("<Q").pack
_PACK_FIXED32 = struct.Struct("<I").pack
_PACK_DOUBLE = struct.Struct("<d").pack
_KINDS = [_SPAN_KIND + bytes((kind + 1,)) for kind in range(5)]  # by SpanKind's value: OTLP's is one more


def _value(value: Any) -> bytes:
    """An ``AnyValue``, as the SDK's ``_encode_value`` chooses its field (``None``: empty)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _ANY_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field(_ANY_STRING, value.encode())
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"Value out of range: {value}")
        return _ANY_INT + _varint(value & _UINT64_MASK)
    if isinstance(value, float):
        return _ANY_DOUBLE + _PACK_DOUBLE(value)
    if isinstance(value, bytes):
        return _field(_ANY_BYTES, value)
    if isinstance(value, Sequence):
        return _field(_ANY_ARRAY, b"".join([_field(_ARRAY_VALUE, _value(v)) for v in value]))
    if isinstance(value, Mapping):
        return _field(_ANY_KVLIST, b"".join([_field(_ARRAY_VALUE, _key_value(str(k), v)) for k, v in value.items()]))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return (_field(_KV_KEY, key.encode()) if key else b"") + _field(_KV_VALUE, _value(value))


def _attribute(tag: bytes, key: str, value: Any) -> bytes | None:
    """One attribute as a ``KeyValue`` field, or ``None`` (logged) if it cannot be encoded."""
    try:
        return _field(tag, _key_value(key, value))
    except Exception:
        log.exception("Failed to encode key %s", key)
        return None


class _Encoder:
    """Encodes batches; remembers the encoding of what repeats (a node has one resource and
    one scope, and most attribute values are names)."""

    def __init__(self) -> None:
        self._strings: dict[bytes, dict[tuple[str, str], bytes]] = {}  # tag -> (key, str value) -> field
        self._resources: dict[int, tuple[Any, bytes]] = {}  # id -> (the object, kept alive; bytes)
        self._scopes: dict[int, tuple[Any, bytes]] = {}
        self._keys: dict[str, bytes] = {}  # attribute key -> its KeyValue.key field (keys are few)

    def attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        """Each attribute as a ``KeyValue`` field; one the SDK could not encode is dropped
        (and logged), as the SDK's ``_encode_attributes`` does."""
        if not attributes:
            return b""
        strings = self._strings.get(tag)
        if strings is None:
            strings = self._strings[tag] = {}
        out = []
        for key, value in attributes.items():
            if type(value) is str:  # only str: True, 1 and 1.0 are equal as dict keys
                encoded = strings.get((key, value))
                if encoded is None:
                    if (encoded := _attribute(tag, key, value)) is None:
                        continue
                    if len(strings) >= _CACHE_LIMIT:
                        strings.clear()
                    strings[(key, value)] = encoded
            elif type(value) is int and value in _INT64 and (key_field := self._key(key)) is not None:
                any_value = _ANY_INT + _varint(value & _UINT64_MASK)  # offsets, sequences: not cached
                encoded = _field(tag, key_field + _field(_KV_VALUE, any_value))
            elif (encoded := _attribute(tag, key, value)) is None:
                continue
            out.append(encoded)
        return b"".join(out)

    def _key(self, key: str) -> bytes | None:
        """A ``KeyValue``'s key field, or ``None`` if ``key`` is not valid UTF-8 text."""
        field = self._keys.get(key)
        if field is None:
            try:
                field = _field(_KV_KEY, key.encode()) if key else b""
            except UnicodeEncodeError:
                return None  # the caller's general path drops and logs it
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            self._keys[key] = field
        return field

    def resource(self, resource: Any) -> bytes:
        return _by_identity(self._resources, resource,
                            lambda r: self.attributes(_RESOURCE_ATTRIBUTE, r.attributes))

    def scope(self, scope: Any) -> bytes:
        if scope is None:
            return b""
        return _by_identity(self._scopes, scope, lambda s: (
            (_field(_SCOPE_NAME, s.name.encode()) if s.name else b"")
            + (_field(_SCOPE_VERSION, s.version.encode()) if s.version else b"")
            + self.attributes(_SCOPE_ATTRIBUTE, s.attributes)))

    def span_field(self, span: ReadableSpan) -> bytes:
        """``span`` as a ``ScopeSpans.spans`` field."""
        if type(span) is LeanSpan:  # our own spans: their fields directly, never anything dropped
            ctx = span._context
            # where the C part is used a span context is a tuple: item 4, its trace state, is the
            # shared default for nearly every span (``not`` on a TraceState calls its ``__len__``)
            if (_native_span_field is not None and not span._events and not span._links
                    and span._status is UNSET_STATUS and (ctx[4] is DEFAULT_TRACE_STATE or not ctx[4])):
                field = _native_span_field(ctx, span._parent, span._name, span._kind._value_, span._start_time or 0,
                                           span._end_time or 0, span._attributes)
                if field is not None:
                    return field
            return _field(_SS_SPAN, self._span(
                ctx, span._parent, span._name, span._kind, span._start_time, span._end_time, span._attributes,
                span._events, span._links, span._status, 0, 0, 0))
        return _field(_SS_SPAN, self._span(
            span.get_span_context(), span.parent, span.name, span.kind, span.start_time, span.end_time,
            span.attributes, span.events, span.links, span.status, span.dropped_attributes, span.dropped_events,
            span.dropped_links))

    def _span(self, ctx: SpanContext, parent: SpanContext | None, name: str, kind: SpanKind, start: int | None,
              end: int | None, attributes: Mapping[str, Any] | None, events: Sequence[Any] | None,
              links: Sequence[Any] | None, status: Status, dropped_attributes: int, dropped_events: int,
              dropped_links: int) -> bytes:
        out = [_SPAN_TRACE_ID, ctx.trace_id.to_bytes(16, "big"), _SPAN_ID, ctx.span_id.to_bytes(8, "big")]
        if ctx.trace_state:
            out.append(_field(_SPAN_TRACE_STATE, ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()).encode()))
        if parent is not None:
            out += (_SPAN_PARENT, parent.span_id.to_bytes(8, "big"))
        if name:
            out.append(_field(_SPAN_NAME, name.encode()))
        out.append(_KINDS[kind._value_])
        if start:
            out += (_SPAN_START, _PACK_FIXED64(start))
        if end:
            out += (_SPAN_END, _PACK_FIXED64(end))
        if attributes:
            out.append(self.attributes(_SPAN_ATTRIBUTE, attributes))
        if dropped_attributes:
            out += (_SPAN_DROPPED_ATTRIBUTES, _varint(dropped_attributes))
        for event in events or ():
            out.append(_field(_SPAN_EVENT, self.event(event)))
        if dropped_events:
            out += (_SPAN_DROPPED_EVENTS, _varint(dropped_events))
        for link in links or ():
            out.append(_field(_SPAN_LINK, self.link(link)))
        if dropped_links:
            out += (_SPAN_DROPPED_LINKS, _varint(dropped_links))
        if status is UNSET_STATUS:
            out.append(_UNSET_STATUS_FIELD)
        else:
            out.append(_field(_SPAN_STATUS, _status(status)))
        out += (_SPAN_FLAGS, _flags(parent))
        return b"".join(out)

    def event(self, event: Any) -> bytes:
        return ((_EVENT_TIME + _PACK_FIXED64(event.timestamp) if event.timestamp else b"")
                + (_field(_EVENT_NAME, event.name.encode()) if event.name else b"")
                + self.attributes(_EVENT_ATTRIBUTE, event.attributes)
                + (_EVENT_DROPPED + _varint(event.dropped_attributes) if event.dropped_attributes else b""))

    def link(self, link: Any) -> bytes:
        ctx = link.context
        return (_LINK_TRACE_ID + ctx.trace_id.to_bytes(16, "big") + _LINK_SPAN_ID + ctx.span_id.to_bytes(8, "big")
                + self.attributes(_LINK_ATTRIBUTE, link.attributes)
                + (_LINK_DROPPED + _varint(link.dropped_attributes) if link.dropped_attributes else b"")
                + _LINK_FLAGS + _flags(ctx))

    def request(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The ``ExportTraceServiceRequest`` for ``spans``: one ``ResourceSpans`` per distinct
        resource, one ``ScopeSpans`` per distinct scope in it, in order of first appearance."""
        groups: list[tuple[Any, list[tuple[Any, list[bytes]]]]] = []
        by_object: dict[tuple[int, int], list[bytes]] = {}  # id(resource), id(scope) -> the spans' fields
        last_resource = last_scope = _UNSEEN
        encoded: list[bytes] = []
        lean_fields = _native_lean_fields if type(spans) is list else None
        at, count = 0, len(spans)
        while at < count:
            span = spans[at]
            lean = type(span) is LeanSpan
            if lean:
                resource, scope = span._resource, span._instrumentation_scope
            else:
                resource, scope = span.resource, span.instrumentation_scope or None
            if resource is not last_resource or scope is not last_scope:  # most batches: one node's spans
                last_resource, last_scope = resource, scope
                key = (id(resource), id(scope))
                if key not in by_object:
                    by_object[key] = _group(groups, resource, scope)
                encoded = by_object[key]
            if lean and lean_fields is not None:  # the run of this group's spans from here that C writes alone
                fields, taken = lean_fields(spans, at, resource, scope)
                if taken:
                    encoded.append(fields)
                    at += taken
                    continue
            encoded.append(self.span_field(span))
            at += 1
        out = []
        for resource, scopes in groups:
            body = [_field(_RS_RESOURCE, self.resource(resource))]
            for scope, encoded in scopes:
                schema = scope.schema_url if scope is not None else None
                body.append(_field(_RS_SCOPE_SPANS, b"".join([
                    _field(_SS_SCOPE, self.scope(scope)), *encoded,
                    _field(_SS_SCHEMA, schema.encode()) if schema else b""])))
            if resource.schema_url:
                body.append(_field(_RS_SCHEMA, resource.schema_url.encode()))
            out.append(_field(_REQUEST_RESOURCE_SPANS, b"".join(body)))
        return b"".join(out)


def _by_identity(cache: dict[int, tuple[Any, bytes]], obj: Any, encode: Callable[[Any], bytes]) -> bytes:
    """``encode(obj)``, remembered for this very object (kept alive in ``cache``, so its id is
    not reused while there); at most 64 objects (a node has one resource and one scope)."""
    kept = cache.get(id(obj))
    if kept is None or kept[0] is not obj:
        if len(cache) >= 64:
            cache.clear()
        kept = cache[id(obj)] = (obj, encode(obj))
    return kept[1]


def _group(groups: list[tuple[Any, list[tuple[Any, list[bytes]]]]], resource: Any, scope: Any) -> list[bytes]:
    """The list collecting spans of (``resource``, ``scope``): equal ones share a group, as
    the SDK groups by equality (its dict keys), not by identity."""
    for known, scopes in groups:
        if known is resource or known == resource:
            break
    else:
        scopes = []
        groups.append((resource, scopes))
    for known_scope, encoded in scopes:
        if known_scope is scope or known_scope == scope:
            return encoded
    encoded = []
    scopes.append((scope, encoded))
    return encoded


def _status(status: Any) -> bytes:
    code = status.status_code.value
    return ((_field(_STATUS_MESSAGE, status.description.encode()) if status.description else b"")
            + (_STATUS_CODE + _varint(code) if code else b""))


_UNSET_STATUS_FIELD = _field(_SPAN_STATUS, b"")  # the status every span has unless one is set
_LOCAL_FLAGS = _PACK_FIXED32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = _PACK_FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)


def _flags(context: SpanContext | None) -> bytes:
    """A span's or link's ``flags`` value: whether the context it refers to is remote."""
    return _REMOTE_FLAGS if context is not None and context.is_remote else _LOCAL_FLAGS


_default = _Encoder()  # one a process: its caches are dicts, safe to share between exporters


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """``spans`` as the bytes of an OTLP ``ExportTraceServiceRequest``."""
    return _default.request(spans)


def native_built() -> bool:
    """Whether the install built the C part (``fabric._span_wire``)."""
    return _built_span_field is not None


def use_native(enabled: bool) -> bool:
    """Encode the common case of a span in C (if built) or not, for the whole process; returns
    whether it is now."""
    global _native_span_field, _native_lean_fields
    _native_span_field = _usable_span_field if enabled else None
    _native_lean_fields = _usable_lean_fields if enabled else None
    return _native_span_field is not None


def native_in_use() -> bool:
    """Whether spans are being written by the C part now."""
    return _native_span_field is not None
