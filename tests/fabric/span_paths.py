"""Switching a test to the spans' Python path (what a node without ``fabric/_span_core.c`` runs)."""

from __future__ import annotations

import pytest

from fabric import spans


def python_start_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start spans (and make them current) in Python from here on, in this test."""
    monkeypatch.setattr(spans, "_span_core", None)
    monkeypatch.setattr(spans, "Current", spans._PyCurrent)
