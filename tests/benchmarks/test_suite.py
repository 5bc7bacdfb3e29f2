"""``python -m bench --render``: the summary of the last results, without running anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_render_prints_the_last_results_and_runs_nothing():
    done = subprocess.run([sys.executable, "-m", "bench", "--render", "--no-readme"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "=== bench." not in done.stdout  # no benchmark started
    assert "cost of tracing, every span exported over OTLP/HTTP" in done.stdout
    assert "memory per idle node" in done.stdout
