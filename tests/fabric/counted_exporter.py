"""An exporter for the tests of what shuts a node's exporter down."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class CountedExporter(SpanExporter):
    """An exporter that only counts its shutdowns (what its processor's shutdown ends with)."""

    def __init__(self) -> None:
        self.shutdowns = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shutdowns += 1
