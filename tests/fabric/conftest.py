"""Fixtures the fabric's OTLP encoder and loop exporter tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.trace import ReadableSpan

from fabric import otlp_exporters
from fabric.telemetry import Telemetry
from tests.fabric.otlp_loop_support import BATCHING
from tests.fabric.otlp_loop_support import LABELS as LOOP_LABELS
from tests.fabric.otlp_spans import LABELS


@pytest.fixture
def node_spans() -> Iterator[tuple[Telemetry, list[ReadableSpan]]]:
    """A node's telemetry (``LABELS``) and a call that lists the spans it ended so far."""
    t = Telemetry(LABELS, recent_capacity=1000)
    yield t, t.recent.snapshot
    t.shutdown()


@pytest.fixture
def own_encoder() -> None:
    """The HTTP exporter encoding with ``fabric/otlp_encoder.py``, as a node's ``exporter_from_env`` sets it."""
    otlp_exporters.adopt_in_http_exporter()


@pytest.fixture
def exporting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Telemetry]]:
    """``exporting(url, **batching)``: a gateway's Telemetry exporting to ``url`` (the batching
    variables as given, the others cleared); shut down at teardown."""
    for name in BATCHING:
        monkeypatch.delenv(name, raising=False)
    telemetries: list[Telemetry] = []

    def make(url: str, **env: str) -> Telemetry:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        telemetry = Telemetry(LOOP_LABELS, HttpExporter(endpoint=url))
        telemetries.append(telemetry)
        return telemetry

    yield make
    for telemetry in telemetries:
        telemetry.shutdown()
