"""``python -m bench --render``: the summary of the results there are, without running anything."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main

MACHINE = {"date": "2026-11-26 04:51:15 UTC", "cpus": 2, "platform": "Linux", "python": "3.11.7", "event_loop": "uvloop"}


def writer(p50_ms: float, rps: float) -> dict:
    return {"cross-mesh, writer on gateway": {"p50_ms": p50_ms, "throughput_rps": rps},
            "cross-mesh, writer on gateway, batches of 16": {"throughput_rps": rps * 7}}


def write_results(where: Path) -> None:
    results = {
        "boot": {"bind": {"p50_ms": 1.4}, "restart": {"mesh.node.ready": {"p50_ms": 2.1}}},
        "produce": {"machine": MACHINE,
                    "baseline": {"floor_p50_ms": 0.5, "raw_rtt_with_fsync": {"p50_ms": 0.6}, "raw_throughput_mps": 70000},
                    "runs": {"on": writer(0.9, 6700), "off": writer(0.85, 7000), "exported": writer(0.9, 4900),
                             "exported, SDK encoder": writer(0.95, 3000)},
                    "tracing_cost": {"on": 0.04, "exported": 0.3, "exported, SDK encoder": 0.57}},
        "cluster": {"kill_removed": {"p50_ms": 2600}, "rss_mb": {"max": 56.7}},
        "bringup": {"runs": [{"meshes": 2, "nodes": 10, "backend": "local", "up_s": [1.6, 1.7, 1.65]},
                             {"meshes": 2, "nodes": 10, "backend": "netns", "up_s": [1.9, 1.8, 2.0]},
                             {"meshes": 4, "nodes": 20, "backend": "local", "up_s": [3.4, 3.3, 3.5]}]},
    }
    results["loss"] = {"loss": 0.1, "hold_s": 10.0, "nodes": 4, "lossy_removed_p50_s": 2.7, "live_removed": [],
                       "rounds": [{}, {}]}
    for name, data in results.items():
        (where / f"{name}.json").write_text(json.dumps(data))


def test_render_summarises_the_results_and_runs_nothing(tmp_path, capsys):
    write_results(tmp_path)
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "=== bench." not in out  # no benchmark started
    assert "Measured 2026-11-26 04:51:15 UTC" in out
    exported = next(line for line in out.splitlines() if "every span exported over OTLP/HTTP" in line)
    assert "4900 vs 7000 rec/s" in exported and "0.3 " in exported
    assert "the same with the SDK's OTLP encoder" in out
    assert "1% of traces exported" not in out  # a mode the results do not have is left out
    assert "56.7 MB" in out
    two = next(line for line in out.splitlines() if "bring-up, 2 meshes x 5 nodes" in line)
    assert "(local)" in two and "1.65 s" in two  # the faster backend's median
    four = next(line for line in out.splitlines() if "4 meshes x 5 nodes" in line)
    assert "3.40 / 1.65 s" in four and "2.06" in four
    assert "1 mesh x" not in out  # a mesh count not measured is left out
    lossy = next(line for line in out.splitlines() if "10% of packets lost" in line)
    assert "2.70 s; 0 of 3 (20 s)" in lossy and "0.9 " in lossy


def test_render_leaves_out_a_skipped_loss_benchmark(tmp_path, capsys):
    write_results(tmp_path)
    (tmp_path / "loss.json").write_text(json.dumps({"skipped": "not root"}))
    assert main(["--render", "--no-readme", "--results", str(tmp_path)]) == 0
    assert "packets lost" not in capsys.readouterr().out


def test_render_without_results_says_what_to_run(tmp_path, capsys):
    assert main(["--render", "--no-readme", "--results", str(tmp_path / "none")]) == 2
    assert "run python -m bench first" in capsys.readouterr().err
