"""Which path a process's spans take: ``fabric._span_core`` (C) or the Python in ``spans``.

The C part reads OpenTelemetry's internals as this version lays them out: the ``ContextVar``
behind the default runtime context, and ``SpanContext`` as the tuple
``(trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)``. It is used where the
install built it, both hold, and ``MESHFABRIC_SPAN_CORE`` is not ``python``; a node checks the
variable at start (``spans.check_span_path``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import SpanContext, TraceFlags

from .errors import ConfigError

SPAN_CORE_ENV = "MESHFABRIC_SPAN_CORE"
SPAN_CORE_CHOICES = ("auto", "c", "python")


def _context_var() -> Any:
    """The ``ContextVar`` behind OTel's runtime context when that is the default one (it is
    unless ``OTEL_PYTHON_CONTEXT`` names another): read and set directly, one call each instead
    of three (the API's ``get_current``/``attach``/``detach`` wrap it)."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    return runtime._current_context if type(runtime) is ContextVarsRuntimeContext else None


def _tuple_layout() -> bool:
    """Whether this OTel version's ``SpanContext`` is still the tuple
    ``(trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)``."""
    flags, state = TraceFlags(1), trace.DEFAULT_TRACE_STATE
    made = SpanContext(1, 2, True, flags, state)
    return tuple(made) == (1, 2, True, flags, state, True) and tuple.__new__(
        SpanContext, (1, 2, True, flags, state, True)) == made and made.is_valid and made.is_remote


CONTEXT_VAR = _context_var()
CONTEXT_IS_TUPLE = _tuple_layout()


def span_path_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """What ``MESHFABRIC_SPAN_CORE`` asks for: ``auto`` (C where it can be used; the default),
    ``c`` or ``python`` (everything in Python, e.g. to compare the two); a bad value is a
    ``ConfigError`` naming the variable."""
    raw = environ.get(SPAN_CORE_ENV, "").strip().lower() or "auto"
    if raw not in SPAN_CORE_CHOICES:
        raise ConfigError(f"{SPAN_CORE_ENV}={raw!r}: expected one of {', '.join(SPAN_CORE_CHOICES)}")
    return raw


def load_core() -> Any:
    """``fabric._span_core`` where the install built it, OTel's runtime context is the default
    one and its span contexts are tuples, unless ``MESHFABRIC_SPAN_CORE=python``; else ``None``.
    ``lean_span`` reads it once, at import: a bad value counts as ``auto`` here, and a node refuses
    it at start (``spans.check_span_path``)."""
    try:
        asked = span_path_from_env()
    except ConfigError:
        asked = "auto"
    if asked == "python" or CONTEXT_VAR is None or not CONTEXT_IS_TUPLE:
        return None
    try:
        from . import _span_core
    except ImportError:
        return None
    return _span_core
