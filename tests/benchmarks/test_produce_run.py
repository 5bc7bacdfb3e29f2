"""``python -m bench.produce`` end to end, in a small run: every tracing mode's cluster started,
measured and stopped in turn (real node processes, the OTLP sink), its JSON written where
``MESHFABRIC_BENCH_RESULTS`` says, nothing left running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.produce import tracing_modes
from tests.benchmarks.bench_run import (
    assert_nothing_left,
    assert_report_repeats,
    bench_env,
    run_bench,
)

pytestmark = pytest.mark.slow


def test_a_small_run_measures_every_mode_and_leaves_nothing_running(tmp_path: Path):
    with bench_env(tmp_path / "results") as (env, scratch):
        done = run_bench("bench.produce", ["--rounds", "1", "--records", "20", "--concurrency", "4"], env)
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
        assert_report_repeats("bench.produce", done, env)
        assert "20 sequential records per path, then 20 with 4 in flight" in done.stdout
        assert_nothing_left(scratch)
