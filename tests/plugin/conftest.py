"""Helpers for the plugin's tests: pytester runs of this checkout, with a short TMPDIR."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugin.leftovers import Baseline

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = Path(__file__).parent / "examples"


@dataclass
class Inner:
    """Runs pytest in a subprocess on files written with ``pytester``, against this checkout."""

    pytester: pytest.Pytester
    tmpdir: Path
    baseline: Baseline

    def run(self, *args: str, timeout: float = 120) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """Start pytest without waiting (to interrupt it)."""
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
        return subprocess.Popen(cmd, cwd=self.pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def leftovers(self) -> list[str]:
        return self.baseline.leftovers()


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inner]:
    """Subprocess pytest runs that import this checkout (not whatever is pip-installed) and keep
    their temp dirs in a fresh short TMPDIR (Unix socket paths are short), checked afterwards."""
    short = Path(tempfile.mkdtemp(prefix="mfi", dir="/tmp"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("TMPDIR", str(short))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    try:
        yield Inner(pytester, short, Baseline.take(short))
    finally:
        shutil.rmtree(short, ignore_errors=True)
