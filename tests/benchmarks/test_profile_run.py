"""``python -m bench.profile`` end to end, in a small run: a raw echo's two processes and a
cluster's gateway and broker sampled by py-spy, the stacks kept, the report's figures from them,
and nothing left running (no node, no sampler)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profile import INSTALL_HINT
from bench.stacks import CATEGORIES
from tests.benchmarks.bench_run import (
    assert_nothing_left,
    assert_report_repeats,
    bench_env,
    run_bench,
)
from tests.plugin.leftovers import command_lines

DISK, FABRIC = CATEGORIES[0], "the fabric (request path, services)"


def samplers_writing_under(directory: Path) -> list[int]:
    """Live ``py-spy`` processes whose output goes under ``directory``."""
    found = []
    for pid, cmdline in command_lines():
        command = cmdline.split(b"\0")
        if command[0].endswith(b"py-spy") and any(str(directory).encode() in a for a in command):
            found.append(pid)
    return found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("py-spy") is None, reason=INSTALL_HINT)
def test_a_small_profile_samples_the_echo_and_the_cluster_and_leaves_nothing_running(tmp_path: Path):
    results = tmp_path / "results"
    with bench_env(results) as (env, scratch):
        done = run_bench("bench.profile", ["--ops", "300"], env)
        processes = json.loads((results / "profile.json").read_text())["processes"]
        assert set(processes) == {"echo client", "echo server", "gateway", "broker"}
        for label, profile in processes.items():
            assert profile["samples"] > 0 and profile["loop_clock_us"] > 0, label
            assert Path(profile["stacks_file"]).parent == results / "profile"
            assert Path(profile["stacks_file"]).stat().st_size > 0, label
        assert processes["echo server"]["by_category_us"][DISK] > 0  # its fsync before each echo
        assert processes["broker"]["by_category_us"][DISK] > 0  # its commit
        assert processes["gateway"]["by_category_us"][FABRIC] > 0
        assert processes["echo client"]["by_category_us"][FABRIC] == 0  # no fabric code in a raw echo
        assert "| category" in done.stdout and "gateway - client" in done.stdout
        for side in ("gateway", "echo client"):  # a lone request's write goes through the same call
            assert processes[side]["bindings_us"]["SendStream.write_all"] > 0, side
        assert "| SendStream.write_all" in done.stdout
        assert "raw echo: 300 round trips" in done.stderr
        assert_report_repeats("bench.profile", done, env)
        assert samplers_writing_under(results) == []
        assert_nothing_left(scratch)


def test_without_py_spy_it_says_how_to_install_it(tmp_path: Path):
    with bench_env(tmp_path / "results") as (env, _):
        done = subprocess.run([sys.executable, "-m", "bench.profile", "--ops", "10"],
                              env={**env, "PATH": str(tmp_path)}, capture_output=True, text=True, timeout=60,
                              check=False)
    assert done.returncode == 1 and INSTALL_HINT in done.stderr


@pytest.mark.parametrize("args", [["--ops", "0"], ["--rate", "-5"], ["--in-flight", "0"], ["--tracing", "maybe"]])
def test_a_bad_option_is_refused_before_anything_starts(args: list[str], tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "bench.profile", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "MESHFABRIC_BENCH_RESULTS": str(tmp_path)}, check=False)
    assert done.returncode == 2 and "python -m bench.profile" in done.stderr
    assert list(tmp_path.iterdir()) == []
