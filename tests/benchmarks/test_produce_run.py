"""``python -m bench.produce`` end to end, in a small run: every tracing mode's cluster started,
measured and stopped in turn (real node processes, the OTLP sink), its JSON written where
``MESHFABRIC_BENCH_RESULTS`` says, nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench.produce import tracing_modes
from tests.plugin.leftovers import node_processes

pytestmark = pytest.mark.slow


def test_a_small_run_measures_every_mode_and_leaves_nothing_running(tmp_path: Path):
    # The bench's clusters, sink and logs go under a temp dir of their own, short (a node's
    # control socket path must fit AF_UNIX's ~108 bytes) and findable afterwards.
    scratch = tempfile.mkdtemp(prefix="mfb-")
    try:
        env = {**os.environ, "MESHFABRIC_BENCH_RESULTS": str(tmp_path / "results"),
               "MESHFABRIC_BENCH_ISOLATED": "1",  # the tests' own namespace already
               "TMPDIR": scratch}
        done = subprocess.run([sys.executable, "-m", "bench.produce", "--rounds", "1", "--records", "20",
                               "--concurrency", "4"], env=env, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "round 1 of 1: 9 clusters, one at a time" in done.stderr
        results = json.loads((tmp_path / "results" / "produce.json").read_text())
        modes = set(tracing_modes("http://sink"))
        assert set(results["runs"]) == modes
        assert set(results["node_cpu_us"]) == modes and all(us > 0 for us in results["node_cpu_us"].values())
        assert set(results["sink_cpu_us"]) == modes and all(us >= 0 for us in results["sink_cpu_us"].values())
        assert set(results["tracing_cost"]) == set(results["tracing_cpu_cost"]) == modes - {"off"}
        assert set(results["tracing_cost_batched"]) == set(results["tracing_cost_batched_ci95"]) == modes - {"off"}
        assert results["exported"]["spans"] > 0 and results["exported"]["rejected"] == 0
        writer = results["runs"]["on"]["cross-mesh, writer on gateway"]
        assert writer["throughput_rps"] > 0 and len(writer["throughput_rounds"]) == 1
        assert "cost of tracing by mode" in done.stdout
        again = subprocess.run([sys.executable, "-m", "bench.produce", "--report"], env=env, capture_output=True,
                               text=True, timeout=60, check=False)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "20 sequential records per path, then 20 with 4 in flight" in again.stdout
        assert again.stdout.split("\n", 1)[1].strip() == done.stdout.rsplit("\nresults:", 1)[0].strip()
        assert node_processes(Path(scratch)) == []
        assert os.listdir(scratch) == []  # the bench's own temp dir went with it
    finally:
        for pid in node_processes(Path(scratch)):  # what a failed or timed-out run left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(scratch, ignore_errors=True)
