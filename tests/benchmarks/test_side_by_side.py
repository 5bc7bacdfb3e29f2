"""``python -m bench.side_by_side``: each round's cost from two clusters written to at once, and
a small run end to end (real node processes, the OTLP sink, nothing left running)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import side_by_side
from bench.produce import stop_cluster
from bench.side_by_side import BATCHED, MODE_SETS, costs, start_both
from tests.benchmarks.bench_run import (
    assert_nothing_left,
    assert_report_repeats,
    bench_env,
    run_bench,
)


def pair(traced_rps: float, off_rps: float, traced_us: float, off_us: float, batched: tuple | None = None) -> dict:
    done = {"traced": {"throughput_rps": traced_rps, "node_cpu_us": traced_us},
            "off": {"throughput_rps": off_rps, "node_cpu_us": off_us}}
    if batched is not None:
        done["batched"] = {"traced": {"throughput_rps": batched[0], "node_cpu_us": 5},
                           "off": {"throughput_rps": batched[1], "node_cpu_us": 5}}
    return done


def test_a_rounds_cost_is_its_own_pairs_and_the_figure_their_median():
    rounds = [pair(900, 1000, 110, 100), pair(450, 500, 120, 100), pair(950, 1000, 100, 100)]
    done = costs(rounds)
    assert done["cost"] == pytest.approx(0.1)  # 0.1, 0.1, 0.05: the machine's speed cancels within a round
    assert done["cpu_cost"] == pytest.approx(1 - 100 / 110)  # 1 - 100/110, 1 - 100/120, 0
    assert done["cost_ci95"][0] <= done["cost"] <= done["cost_ci95"][1]
    assert done["throughput_rps"] == {"traced": 900, "off": 1000}
    assert done["node_cpu_us"] == {"traced": 110, "off": 100}
    assert "batched_cost" not in done  # rounds saved before the batched runs


def test_the_batched_cost_pairs_each_rounds_batched_runs_too():
    rounds = [pair(900, 1000, 110, 100, (30_000, 31_000)), pair(450, 500, 120, 100, (10_000, 20_000)),
              pair(950, 1000, 100, 100, (29_000, 29_000))]
    done = costs(rounds)
    assert done["cost"] == pytest.approx(0.1)
    assert done["batched_cost"] == pytest.approx(1 - 30_000 / 31_000)  # of 0.032, 0.5 and 0
    assert done["batched_cost_ci95"][0] <= done["batched_cost"] <= done["batched_cost_ci95"][1]
    assert done["batched_throughput_rps"] == {"traced": 29_000, "off": 29_000}


@pytest.mark.slow
def test_a_small_run_measures_the_suites_modes_beside_the_sdk_off_and_leaves_nothing_running(tmp_path: Path):
    with bench_env(tmp_path / "results") as (env, scratch):
        done = run_bench("bench.side_by_side",
                         ["--rounds", "1", "--records", "200", "--concurrency", "4", "--modes", "suite"], env)
        results = json.loads((tmp_path / "results" / "side_by_side.json").read_text())
        assert set(results["modes"]) == set(MODE_SETS["suite"])
        for mode in MODE_SETS["suite"]:
            (round_,) = results["modes"][mode]["rounds"]
            assert all(run[side]["throughput_rps"] > 0 and run[side]["node_cpu_us"] > 0
                       for run in (round_, round_["batched"]) for side in ("traced", "off"))
            assert "batched_cost" in results["modes"][mode]
            if mode == "every span exported":
                assert round_["sink_spans"] > 0
            elif "exported" not in mode:
                assert round_["sink_spans"] == 0  # only the exporting clusters post to the sink
        assert results["exported"]["rejected"] == 0
        assert "A/A: SDK off beside SDK off" in done.stdout and "cost in batched" in done.stdout
        assert results["settings"]["batched_records"] == 200 * BATCHED
        assert_report_repeats("bench.side_by_side", done, env)
        assert_nothing_left(scratch)


def test_bad_arguments_are_a_clear_error():
    done = subprocess.run([sys.executable, "-m", "bench.side_by_side", "--rounds", "0"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "must be at least 1" in done.stderr


def test_a_pair_that_fails_to_start_leaves_the_started_cluster_for_the_caller_to_stop(monkeypatch, tmp_path: Path):
    def fake_start(root: Path, env: dict, concurrency: int) -> dict:
        if env.get("fail"):
            raise RuntimeError("mesh2.broker exited with 1 before ready")
        return {"started": root}

    monkeypatch.setattr(side_by_side, "start_warm_cluster", fake_start)
    clusters: dict = {}
    with pytest.raises(RuntimeError, match="before ready"):
        start_both(clusters, {"traced": (tmp_path / "t", {"fail": "1"}), "off": (tmp_path / "o", {})}, 4)
    assert clusters == {"off": {"started": tmp_path / "o"}}  # the caller's finally stops it
    both_failed: dict = {}
    with pytest.raises(RuntimeError, match="before ready"):
        start_both(both_failed, {"traced": (tmp_path / "t", {"fail": "1"}), "off": (tmp_path / "o", {"fail": "1"})}, 4)
    assert both_failed == {}
    stop_cluster({})  # what the caller's finally then stops: nothing, and no error
    start_both(clusters, {"off": (tmp_path / "o", {}), "traced": (tmp_path / "t", {})}, 4)
    assert set(clusters) == {"off", "traced"}
