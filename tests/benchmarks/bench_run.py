"""Running a benchmark module end to end from a test: its clusters, sink and logs under a temp
dir of its own, its JSON where the test says, and whatever it leaves running killed after."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.plugin.leftovers import node_processes


@contextmanager
def bench_env(results: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """``(env, scratch)``: an environment writing results to ``results`` and temp files under
    ``scratch`` (short: a node's control socket path must fit AF_UNIX's ~108 bytes); node
    processes left under ``scratch`` are killed and the dir removed on the way out."""
    scratch = Path(tempfile.mkdtemp(prefix="mfb-"))
    try:
        yield {**os.environ, "MESHFABRIC_BENCH_RESULTS": str(results),
               "MESHFABRIC_BENCH_ISOLATED": "1",  # the tests' own namespace already
               "TMPDIR": str(scratch)}, scratch
    finally:
        for pid in node_processes(scratch):  # what a failed or timed-out run left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(scratch, ignore_errors=True)


def run_bench(module: str, args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m module args...``; a failure shows the end of its stderr."""
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_report_repeats(module: str, done: subprocess.CompletedProcess, env: dict[str, str]) -> None:
    """``--report`` prints the run's tables again, under a line naming the run."""
    again = run_bench(module, ["--report"], env, timeout=60)
    assert again.stdout.split("\n", 1)[1].strip() == done.stdout.rsplit("\nresults:", 1)[0].strip()


def assert_nothing_left(scratch: Path) -> None:
    assert node_processes(scratch) == []
    assert os.listdir(scratch) == []  # the bench's own temp dir went with it
