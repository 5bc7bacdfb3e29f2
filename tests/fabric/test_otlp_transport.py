"""Which HTTP transport the SDK's OTLP exporter gets (``fabric/otlp_transport.py``): urllib3
only where it behaves like requests, the exporter's default everywhere else."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from fabric import ConfigError
from fabric.otlp_transport import http_transport, is_loopback_http
from fabric.telemetry import exporter_from_env

LOOPBACK = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize("url", ["http://127.0.0.1:4318", "http://localhost:4318/v1/traces", "http://[::1]:4318",
                                 "http://127.0.0.53:9"])
def test_loopback_http(url):
    assert is_loopback_http(url)


@pytest.mark.parametrize("url", ["https://127.0.0.1:4318", "http://10.0.0.2:4318", "http://collector:4318",
                                 "grpc://127.0.0.1:4317", "127.0.0.1:4318", ""])
def test_not_loopback_http(url):
    assert not is_loopback_http(url)


@pytest.mark.parametrize("env", [LOOPBACK, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://localhost:4318/v1/traces"},
                                 {**LOOPBACK, "MESHFABRIC_OTLP_TRANSPORT": "auto"}])
def test_a_loopback_collector_gets_the_urllib3_transport(env):
    assert isinstance(http_transport(env), Urllib3HTTPTransport)


@pytest.mark.parametrize("extra", [
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:4318"},  # TLS: requests' CA bundle, not urllib3's
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example:4318"},
    {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://10.1.2.3:4318/v1/traces"},  # the traces endpoint wins
    {"HTTP_PROXY": "http://proxy:3128"},  # requests would go through it
    {"all_proxy": "socks5://proxy:1080"},
    {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "mine"},  # a requests session
    {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": "mine"},
    {"MESHFABRIC_OTLP_TRANSPORT": "requests"},
])
def test_anything_else_keeps_the_exporters_default(extra):
    assert http_transport({**LOOPBACK, **extra}) is None


def test_no_endpoint_means_the_sdks_default_localhost():
    assert isinstance(http_transport({}), Urllib3HTTPTransport)


def test_a_bad_choice_is_a_config_error_naming_the_variable():
    with pytest.raises(ConfigError, match="MESHFABRIC_OTLP_TRANSPORT='urllib'.*auto, requests"):
        http_transport({**LOOPBACK, "MESHFABRIC_OTLP_TRANSPORT": "urllib"})


def test_an_sdk_whose_exporter_takes_no_transport_keeps_its_default(monkeypatch):
    def older_init(self, endpoint=None, timeout=None):  # the signature of an SDK before the argument
        pass

    monkeypatch.setattr(OTLPSpanExporter, "__init__", older_init)
    assert http_transport(LOOPBACK) is None


def test_a_node_exporting_to_a_loopback_collector_does_not_import_requests():
    code = ("import sys; from fabric.telemetry import exporter_from_env; e = exporter_from_env(); "
            "print('requests' in sys.modules, 'charset_normalizer' in sys.modules)")
    env = {"PATH": "/usr/bin:/bin", **LOOPBACK}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stdout.split() == ["False", "False"], done.stderr
    with_requests = subprocess.run([sys.executable, "-c", code], env={**env, "MESHFABRIC_OTLP_TRANSPORT": "requests"},
                                   capture_output=True, text=True, timeout=60, check=False)
    assert with_requests.stdout.split() == ["True", "True"], with_requests.stderr


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_bad_choice_fails_the_exporter_whatever_the_protocol(protocol):
    with pytest.raises(ConfigError, match="MESHFABRIC_OTLP_TRANSPORT"):
        exporter_from_env({**LOOPBACK, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "MESHFABRIC_OTLP_TRANSPORT": "curl"})
