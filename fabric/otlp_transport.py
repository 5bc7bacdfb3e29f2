"""The SDK's OTLP/HTTP exporter on urllib3 instead of requests, where the two behave alike.

The exporter posts through ``requests`` by default. Importing it (with charset_normalizer,
idna and certifi) costs a node process ~35-45 ms of CPU at start, a sixth of what the process
spends before it is ready, and every post reads the environment for proxies and netrc. The
SDK also ships a urllib3 transport (``opentelemetry-exporter-http-transport``), which its
exporter accepts through a private ``_transport`` argument. A node hands it that transport
only where nothing would change: a plain-HTTP endpoint on the loopback interface (no TLS, so
no CA bundle to pick), no proxy variables (requests honours them, urllib3 does not) and no
credential provider (it yields a requests session). Anything else, or an SDK without the
argument or the transport, keeps the exporter's default. ``MESHFABRIC_OTLP_TRANSPORT=requests``
keeps it too.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

TRANSPORT_ENV = "MESHFABRIC_OTLP_TRANSPORT"
CHOICES = ("auto", "requests")
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")
CREDENTIAL_VARS = ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
                   "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER")


def traces_endpoint(environ: Mapping[str, str]) -> str:
    """The URL the HTTP exporter posts spans to, as the SDK resolves it from the variables."""
    return (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"))


def is_loopback_http(url: str) -> bool:
    """True for ``http://`` to localhost or a loopback address."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def is_plain_loopback(url: str, environ: Mapping[str, str]) -> bool:
    """``http://`` to loopback, with no proxy variable and no credential provider set: where the
    SDK's ``requests`` session would add nothing to a post."""
    return is_loopback_http(url) and not any(environ.get(v) for v in (*PROXY_VARS, *CREDENTIAL_VARS))


def choice_from_env(environ: Mapping[str, str]) -> str:
    """``MESHFABRIC_OTLP_TRANSPORT``: ``auto`` (the default) or ``requests``; else ``ConfigError``."""
    choice = environ.get(TRANSPORT_ENV, "auto").strip() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{TRANSPORT_ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    return choice


def http_transport_chosen(environ: Mapping[str, str]) -> str:
    """``"urllib3"`` where the SDK's HTTP span exporter gets its urllib3 transport (a plain
    loopback collector, unless ``MESHFABRIC_OTLP_TRANSPORT=requests``), else ``"requests"``."""
    if choice_from_env(environ) == "requests" or not is_plain_loopback(traces_endpoint(environ), environ):
        return "requests"
    return "urllib3"


def http_transport(environ: Mapping[str, str]) -> Any | None:
    """The urllib3 transport for the SDK's HTTP span exporter, or ``None`` to keep its default."""
    if http_transport_chosen(environ) == "requests":
        return None
    try:
        from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
    except ImportError:
        return None
    if "_transport" not in inspect.signature(OTLPSpanExporter.__init__).parameters:
        return None
    return Urllib3HTTPTransport(verify=True, cert=None)
