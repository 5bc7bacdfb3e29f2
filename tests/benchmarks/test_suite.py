"""``python -m bench --render``: the summary of the results there are, without running anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import FULL, SUITE, main
from bench.produce import DIAGNOSTIC, SAME_AS_OFF, SIDE_BY_SIDE, tracing_modes
from bench.produce_costs import p50_ratios, paired_costs, paired_cpu_costs
from bench.report import cpu_model, median_interval
from bench.side_by_side import A_A, MODE_SETS, MODES

MACHINE = {"date": "2026-11-26 04:51:15 UTC", "cpus": 2, "platform": "Linux", "python": "3.11.7", "event_loop": "uvloop"}


def writer(p50_ms: float, rps: float) -> dict:
    return {"cross-mesh, writer on gateway": {"p50_ms": p50_ms, "throughput_rps": rps},
            "cross-mesh, writer on gateway, batches of 16": {"throughput_rps": rps * 7}}


def write_results(where: Path) -> None:
    results = {
        "boot": {"bind": {"p50_ms": 1.4}, "restart": {"mesh.node.ready": {"p50_ms": 2.1}},
                 "restart_ratio_ci95": [1.38, 1.61]},
        "produce": {"machine": MACHINE,
                    "baseline": {"floor_p50_ms": 0.5, "raw_rtt_with_fsync": {"p50_ms": 0.6}, "raw_throughput_mps": 70000,
                                 "raw_rtt": {"p50_ms": 0.25}, "raw_rtt_in_rhythm": {"p50_ms": 0.3},
                                 "grown_file_commit_in_rhythm": {"p50_ms": 0.15}, "floor_back_to_back_p50_ms": 0.4},
                    "runs": {"on": writer(0.9, 6700), "off": writer(0.85, 7000), "exported": writer(0.9, 4900),
                             "exported, SDK thread": writer(0.95, 3000), "exported, Python encoder": writer(0.9, 3500),
                             "off, second cluster": writer(0.85, 7100)},
                    "tracing_cost": {"on": 0.04, "exported": 0.3, "exported, SDK thread": 0.57},
                    "p50_ratio_ci95": {"on": [1.62, 1.93]},
                    "tracing_cost_ci95": {"on": [-0.02, 0.11], "exported": [0.25, 0.36]},
                    "tracing_cost_batched": {"on": 0.01, "exported": 0.06},
                    "tracing_cost_batched_ci95": {"on": [-0.03, 0.04], "exported": [0.02, 0.09]},
                    "node_cpu_us": {"on": 300.0, "off": 270.0, "exported": 320.0},
                    "sink_cpu_us": {"on": 1.0, "off": 0.9, "exported": 9.6},
                    "tracing_cpu_cost": {"on": 0.1, "exported": 0.156},
                    "tracing_cpu_cost_ci95": {"on": [0.05, 0.14], "exported": [0.12, 0.2]}},
        "cluster": {"kill_removed": {"p50_ms": 2600}, "pause_suspect": {"p50_ms": 1620}, "join": {"p50_ms": 224},
                    "config": {"tick_interval": 0.2}, "rss_mb": {"max": 56.7},
                    "idle_cpu_pct": {"mean": 1.3, "max": 1.4, "window_s": 10.0}},
        "bringup": {"runs": [{"meshes": 2, "nodes": 10, "backend": "local", "up_s": [1.6, 1.7, 1.65]},
                             {"meshes": 2, "nodes": 10, "backend": "netns", "up_s": [1.9, 1.8, 2.0]},
                             {"meshes": 4, "nodes": 20, "backend": "local", "up_s": [3.4, 3.3, 3.5]}]},
    }
    results["directory"] = {"sizes": [10, 1000, 10000], "us_per_call": {
        size: {"resolve by name": us, "expire (visits every entry)": us * 100}
        for size, us in (("10", 0.15), ("1000", 0.16), ("10000", 0.18))}}
    results["loss"] = {"loss": 0.1, "hold_s": 10.0, "nodes": 4, "lossy_removed_p50_s": 2.7, "live_removed": [],
                       "rounds": [{}, {}]}
    for name, data in results.items():
        (where / f"{name}.json").write_text(json.dumps(data))


def test_render_summarises_the_results_and_runs_nothing(tmp_path, capsys):
    write_results(tmp_path)
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "=== bench." not in out  # no benchmark started
    assert "Measured 2026-11-26 04:51:15 UTC on 2 CPUs, Linux" in out  # results from before the CPU's model
    exported = next(line for line in out.splitlines() if "every span exported over OTLP/HTTP" in line)
    assert "4900 vs 7000 rec/s, CI 0.25 to 0.36" in exported and "0.3 " in exported
    boot = next(line for line in out.splitlines() if "mesh.node.ready (restart)" in line)
    assert "2.10 / 1.40 ms, rounds 1.38 to 1.61" in boot and "1.5 " in boot
    by_cpu = [line for line in out.splitlines() if "the nodes' CPU a record" in line]
    assert len(by_cpu) == 2  # under "every span recorded" and "exported" only
    assert "300 vs 270 µs, CI 0.05 to 0.14" in by_cpu[0] and "320 vs 270 µs, CI 0.12 to 0.20" in by_cpu[1]
    batched = [line for line in out.splitlines() if "the same in batched throughput" in line]
    assert len(batched) == 2  # under "every span recorded" and "exported" only
    assert "46900 vs 49000 rec/s, CI -0.03 to 0.04" in batched[0] and "0.01 " in batched[0]
    assert "34300 vs 49000 rec/s, CI 0.02 to 0.09" in batched[1] and "0.06 " in batched[1]
    assert all("< 0.10" in line for line in batched)
    sink = next(line for line in out.splitlines() if "the OTLP sink's CPU a record" in line)
    assert "9.6 / 320 µs (SDK off: 0.9)" in sink and "0.03 " in sink and "(context)" in sink
    assert out.index("every span exported over OTLP") < out.index("the OTLP sink's CPU") < out.index(
        "the same through the SDK's export thread")  # under the exported row
    noise = next(line for line in out.splitlines() if "a second cluster with the SDK off" in line)
    assert "7100 vs 7000 rec/s" in noise and "CI" not in noise  # no interval recorded for it
    assert "the same through the SDK's export thread" in out
    python = next(line for line in out.splitlines() if "encoder in Python only" in line)
    assert "3500 vs 7000 rec/s" in python and "0.5 " in python  # no paired cost recorded: 1 - 3500/7000
    assert "1% of traces exported" not in out  # a mode the results do not have is left out
    assert "56.7 MB" in out
    target = next(line for line in out.splitlines() if "produce cross-mesh p50 (gateway writer)" in line)
    assert "0.90 / 0.50 ms, rounds 1.62 to 1.93" in target and "1.8 " in target and "in a produce's rhythm" in target
    back_to_back = next(line for line in out.splitlines() if "each back to back" in line)
    assert "0.90 / 0.40 ms" in back_to_back and "2.25" in back_to_back and "(context)" in back_to_back
    off = next(line for line in out.splitlines() if "the same with the SDK off" in line)
    assert "0.85 / 0.50 ms" in off and "rounds" not in off and "1.7 " in off  # no interval recorded for it
    commit = next(line for line in out.splitlines() if "the broker's commit" in line)
    assert "0.90 / 0.45 ms" in commit and "2 " in commit and "(context)" in commit
    idle = next(line for line in out.splitlines() if "CPU per idle node" in line)
    assert "1.30%" in idle and "0.013" in idle and "(context)" in idle
    two = next(line for line in out.splitlines() if "bring-up, 2 meshes x 5 nodes" in line)
    assert "(local)" in two and "1.65 s" in two  # the faster backend's median
    four = next(line for line in out.splitlines() if "4 meshes x 5 nodes" in line)
    assert "3.40 / 1.65 s" in four and "2.06" in four
    assert "1 mesh x" not in out  # a mesh count not measured is left out
    paused = next(line for line in out.splitlines() if "pause (SIGSTOP) -> suspected" in line)
    assert "1.62 s" in paused and "0.54" in paused  # against the 3 s target
    joined = next(line for line in out.splitlines() if "a join -> listed by every node" in line)
    assert "224 / 200 ms" in joined and "1.12" in joined and "(context)" in joined
    lossy = next(line for line in out.splitlines() if "10% of packets lost" in line)
    assert "2.70 s; 0 of 3 (20 s)" in lossy and "0.9 " in lossy
    directory = next(line for line in out.splitlines() if "resolve a node by name" in line)
    assert "10,000 entries / 10" in directory and "0.18 / 0.15 µs" in directory and "1.2 " in directory


def test_render_reads_results_from_before_the_floor_was_measured_in_rhythm(tmp_path, capsys):
    write_results(tmp_path)
    produce = json.loads((tmp_path / "produce.json").read_text())
    for key in ("raw_rtt_in_rhythm", "grown_file_commit_in_rhythm", "floor_back_to_back_p50_ms"):
        del produce["baseline"][key]  # the floor then was its parts back to back
    (tmp_path / "produce.json").write_text(json.dumps(produce))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    target = next(line for line in out.splitlines() if "produce cross-mesh p50 (gateway writer)" in line)
    assert "0.90 / 0.50 ms" in target and "rhythm" not in target
    assert "each back to back" not in out and "the broker's commit" not in out


def test_render_shows_the_side_by_side_costs_where_they_were_measured(tmp_path, capsys):
    write_results(tmp_path)
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    assert "side by side" not in capsys.readouterr().out  # results from before it was measured
    modes = {mode: {"cost": cost, "cost_ci95": [cost - 0.02, cost + 0.01], "cpu_cost": cost * 1.5,
                    "cpu_cost_ci95": [cost, cost * 2], "throughput_rps": {"traced": 6000.0, "off": 6600.0},
                    "node_cpu_us": {"traced": 150.0, "off": 130.0}}
             for mode, cost in (("every span recorded", 0.09), ("every span exported", 0.13),
                                ("A/A: SDK off beside SDK off", -0.01))}
    (tmp_path / "side_by_side.json").write_text(json.dumps({"modes": modes, "settings": {"rounds": 12}}))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    recorded = next(line for line in out.splitlines() if "every span recorded, side by side" in line)
    assert "6000 vs 6600 rec/s, CI 0.07 to 0.10, 12 rounds" in recorded and "0.09 " in recorded and "< 0.10" in recorded
    exported = next(line for line in out.splitlines() if "every span exported, side by side" in line)
    assert "0.13 " in exported and "< 0.10" in exported
    by_cpu = [line for line in out.splitlines() if "the same in CPU a record (both nodes of each" in line]
    assert len(by_cpu) == 2 and "150 vs 130 µs, CI 0.09 to 0.18" in by_cpu[0] and "(context)" in by_cpu[0]
    assert out.count("the same in batched throughput") == 2  # bench.produce's only: not measured side by side
    noise = next(line for line in out.splitlines() if "an SDK-off cluster beside another" in line)
    assert "-0.01" in noise and "(context)" in noise
    assert out.index("every span recorded, side by side") > out.index("every span exported over OTLP")  # after produce's


def test_render_shows_the_side_by_side_batched_costs_where_they_were_measured(tmp_path, capsys):
    write_results(tmp_path)
    modes = {mode: {"cost": 0.1, "cost_ci95": [0.08, 0.12], "cpu_cost": 0.15, "cpu_cost_ci95": [0.1, 0.2],
                    "throughput_rps": {"traced": 6000.0, "off": 6600.0}, "node_cpu_us": {"traced": 150.0, "off": 130.0},
                    "batched_cost": cost, "batched_cost_ci95": [cost - 0.03, cost + 0.04],
                    "batched_throughput_rps": {"traced": 30000.0, "off": 31000.0}}
             for mode, cost in (("every span recorded", 0.02), ("every span exported", 0.05),
                                ("A/A: SDK off beside SDK off", 0.01))}
    (tmp_path / "side_by_side.json").write_text(json.dumps({"modes": modes, "settings": {"rounds": 12}}))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    exported = lines.index(next(line for line in lines if "every span exported, side by side" in line))
    batched = lines[exported + 2]  # after its CPU row
    assert "the same in batched throughput" in batched and "30000 vs 31000 rec/s, CI 0.02 to 0.09" in batched
    assert "0.05 " in batched and "< 0.10" in batched
    assert sum("the same in batched throughput" in line for line in lines) == 4  # two of produce's, two here


def test_render_leaves_out_a_skipped_loss_benchmark(tmp_path, capsys):
    write_results(tmp_path)
    (tmp_path / "loss.json").write_text(json.dumps({"skipped": "not root"}))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    assert "packets lost" not in capsys.readouterr().out


def test_render_without_the_pause_and_join_figures_leaves_their_rows_out(tmp_path, capsys):
    write_results(tmp_path)
    (tmp_path / "cluster.json").write_text(json.dumps({"kill_removed": {"p50_ms": 2600}, "rss_mb": {"max": 56.7}}))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kill -> removed" in out and "pause" not in out and "a join" not in out and "CPU per idle" not in out


def test_the_suite_measures_every_target_and_leaves_the_developers_context_to_full():
    every, targets = tracing_modes("http://sink"), tracing_modes("http://sink", "targets")
    assert set(every) - set(targets) == set(DIAGNOSTIC) | set(SIDE_BY_SIDE) and len(DIAGNOSTIC) == 3
    assert {"on", "off", "exported", SAME_AS_OFF} == set(targets)  # the 1% modes: side by side
    assert {"1% of traces recorded", "1% of traces exported"} < set(MODES)
    assert set(FULL) == set(SUITE)
    assert "side_by_side" in SUITE
    assert set(tracing_modes("http://sink", "on-off")) == {"on", "off"}  # tracing's costs: side by side
    assert SUITE["produce"][-2:] == ["--modes", "on-off"] and FULL["produce"][-2:] == ["--modes", "all"]
    assert "2x5" in SUITE["chaos"] and "1x4,2x5" in FULL["chaos"]
    # side by side: 1% exported records all 1% recorded does (and exports), so its cost bounds the other's
    assert SUITE["side_by_side"][-2:] == ["--modes", "suite"] and FULL["side_by_side"][-2:] == ["--modes", "all"]
    assert set(MODES) - set(MODE_SETS["suite"]) == {"1% of traces recorded"} and A_A in MODE_SETS["suite"]
    assert MODE_SETS["all"] == MODES
    # bring-up: the fixture's default backend in the suite, every backend with --full
    assert SUITE["bringup"][-2:] == ["--backends", "auto"] and FULL["bringup"][-2:] == ["--backends", "all"]
    # chaos: re-convergence in the suite, the scenarios' throughput too with --full
    assert "--no-scenarios" in SUITE["chaos"] and "--no-scenarios" not in FULL["chaos"]


def test_render_without_the_developers_modes_leaves_their_rows_out(tmp_path, capsys):
    write_results(tmp_path)
    produce = json.loads((tmp_path / "produce.json").read_text())
    for mode in DIAGNOSTIC:
        produce["runs"].pop(mode, None)
        produce["tracing_cost"].pop(mode, None)
    (tmp_path / "produce.json").write_text(json.dumps(produce))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "export thread" not in out and "encoder in Python" not in out
    assert "every span recorded" in out and "every span exported" in out and "second cluster" in out


def test_render_of_an_on_off_produce_run_leaves_tracings_cost_to_side_by_side(tmp_path, capsys):
    write_results(tmp_path)
    produce = json.loads((tmp_path / "produce.json").read_text())
    produce["runs"] = {mode: runs for mode, runs in produce["runs"].items() if mode in ("on", "off")}
    for key in ("tracing_cost", "tracing_cost_ci95", "tracing_cost_batched", "tracing_cost_batched_ci95"):
        produce[key] = {}
    (tmp_path / "produce.json").write_text(json.dumps(produce))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "produce cross-mesh p50" in out and "batched produce throughput" in out
    assert "gateway writer throughput vs SDK off" not in out and "second cluster" not in out
    with pytest.raises(ValueError, match="on-off"):
        tracing_modes("http://sink", "everything")


def test_render_without_results_says_what_to_run(tmp_path, capsys):
    assert main(["--render", "--no-readme", "--results", str(tmp_path / "none")]) == 2
    assert "run python -m bench first" in capsys.readouterr().err


def test_the_median_interval_is_the_sign_tests_order_statistics():
    samples = [0.3, -0.1, 0.05, 0.2, 0.0, 0.12, 0.08, -0.05, 0.15, 0.1, 0.02, 0.25]
    ordered = sorted(samples)
    assert median_interval(samples) == (ordered[2], ordered[9])  # n = 12: 3rd and 10th
    assert median_interval(samples[:6]) == (min(samples[:6]), max(samples[:6]))  # too few: the whole range
    assert median_interval([0.1]) == (0.1, 0.1)


def test_paired_costs_pair_each_round_with_the_sdk_off_in_that_round():
    rounds = {"off": [{"throughput_rps": 100.0}, {"throughput_rps": 50.0}],
              "on": [{"throughput_rps": 90.0}, {"throughput_rps": 40.0}]}
    assert paired_costs(rounds) == {"on": [pytest.approx(0.1), pytest.approx(0.2)]}
    for mode, batched in (("off", [1000.0, 500.0]), ("on", [990.0, 500.0])):
        for run, rps in zip(rounds[mode], batched):
            run["batched_rps"] = rps
    assert paired_costs(rounds, "batched_rps") == {"on": [pytest.approx(0.01), pytest.approx(0.0)]}


def test_paired_cpu_costs_are_the_share_of_a_traced_records_cpu_the_sdk_off_does_not_spend():
    rounds = {"off": [{"node_cpu_us": 270.0}, {"node_cpu_us": 300.0}],
              "on": [{"node_cpu_us": 300.0}, {"node_cpu_us": 300.0}],
              "off, second cluster": [{"node_cpu_us": 280.0}, {"node_cpu_us": 250.0}]}
    assert paired_cpu_costs(rounds) == {"on": [pytest.approx(0.1), pytest.approx(0.0)],
                                        "off, second cluster": [pytest.approx(10 / 280), pytest.approx(-0.2)]}


def test_p50_ratios_hold_each_round_against_its_own_floor():
    rounds = {"on": [{"latencies_s": [0.9e-3, 1.0e-3, 1.1e-3]}, {"latencies_s": [2.0e-3, 2.0e-3, 3.0e-3]}],
              "off": [{"latencies_s": [0.8e-3]}, {"latencies_s": [1.6e-3]}]}
    floors = [0.5e-3, 1.0e-3]  # the second round ran on a machine twice as slow
    assert p50_ratios(rounds, floors) == {"on": [pytest.approx(2.0), pytest.approx(2.0)],
                                         "off": [pytest.approx(1.6), pytest.approx(1.6)]}
    with pytest.raises(ValueError):
        p50_ratios(rounds, floors[:1])  # a round without its floor is a bug, not a shorter list


def test_render_without_a_two_mesh_bring_up_shows_the_counts_measured(tmp_path, capsys):
    write_results(tmp_path)
    (tmp_path / "bringup.json").write_text(json.dumps(
        {"runs": [{"meshes": 4, "nodes": 20, "backend": "local", "up_s": [3.4, 3.3, 3.5]}]}))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    four = next(line for line in capsys.readouterr().out.splitlines() if "bring-up, 4 meshes x 5 nodes" in line)
    assert "3.40 s" in four and "(context)" in four


def test_render_shows_what_the_fork_server_saves_a_two_mesh_bring_up(tmp_path, capsys):
    write_results(tmp_path)
    bringup = json.loads((tmp_path / "bringup.json").read_text())
    bringup["runs"] = [{**run, "starts": "forked"} for run in bringup["runs"]] + [
        {"meshes": 2, "nodes": 10, "backend": "netns", "up_s": [3.1, 3.3], "starts": "fresh"}]
    (tmp_path / "bringup.json").write_text(json.dumps(bringup))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    target = next(line for line in lines if "bring-up, 2 meshes x 5 nodes" in line)
    assert "1.65 s" in target and "< 3 s" in target  # the forked run, never the fresh one
    fresh = next(line for line in lines if "every node a new interpreter" in line)
    assert "(netns)" in fresh and "3.20 / 1.65 s" in fresh and "1.94" in fresh and "(context)" in fresh
    assert not any("first bring-up" in line for line in lines)  # not measured in these results


def test_render_shows_a_processs_first_bring_up_against_the_later_ones(tmp_path, capsys):
    write_results(tmp_path)
    bringup = json.loads((tmp_path / "bringup.json").read_text())
    bringup["runs"].append({"meshes": 1, "nodes": 5, "backend": "netns", "up_s": [0.4, 0.38], "starts": "forked"})
    bringup["first_up_s"] = 0.78
    (tmp_path / "bringup.json").write_text(json.dumps(bringup))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    first = next(line for line in capsys.readouterr().out.splitlines() if "first bring-up of 1 mesh" in line)
    assert "0.78 / 0.39 s" in first and "| 2 " in first and "(context)" in first


def test_render_names_the_cpu_where_it_was_recorded(tmp_path, capsys):
    write_results(tmp_path)
    produce = json.loads((tmp_path / "produce.json").read_text())
    produce["machine"]["cpu"] = "Intel(R) Xeon(R) Processor (family 6 model 207, 2100 MHz)"
    (tmp_path / "produce.json").write_text(json.dumps(produce))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    assert "on 2 CPUs (Intel(R) Xeon(R) Processor (family 6 model 207, 2100 MHz)), Linux" in capsys.readouterr().out


def test_the_cpu_model_names_the_first_cpu_and_survives_a_missing_file(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 6\nmodel\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\n"
                       "cpu MHz\t\t: 2100.000\nflags\t\t: fpu vme\n\nprocessor\t: 1\nmodel\t\t: 85\n")
    assert cpu_model(cpuinfo) == "Intel(R) Xeon(R) Processor (family 6 model 207, 2100 MHz)"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n")
    assert cpu_model(cpuinfo) == "Some CPU"
    assert cpu_model(tmp_path / "missing")  # platform.processor() or "unknown": never an error
