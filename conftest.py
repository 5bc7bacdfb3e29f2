"""Repository-level pytest configuration: the repo root on sys.path for `tests.*` imports, and
the fixtures tests in several directories share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_meshfabric.capture import OtlpReceiver

# `pytester` for the plugin's own tests (tests/plugin/); pytest only honours this at the root.
pytest_plugins = ["pytester"]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """The harness's real OTLP receiver, on free ports, for one test."""
    with OtlpReceiver() as rx:
        yield rx
