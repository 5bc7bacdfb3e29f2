"""Fixtures the fabric's OTLP encoder tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from fabric.telemetry import Telemetry
from tests.fabric.otlp_spans import LABELS


@pytest.fixture
def node_spans() -> Iterator[tuple[Telemetry, list[ReadableSpan]]]:
    """A node's telemetry (``LABELS``) and a call that lists the spans it ended so far."""
    t = Telemetry(LABELS, recent_capacity=1000)
    yield t, t.recent.snapshot
    t.shutdown()
