"""Benchmarks run their clusters inside a loopback-only network namespace, like the tests."""

from __future__ import annotations

import os
import shlex
import shutil
import sys

_MARK = "MESHFABRIC_BENCH_ISOLATED"


def ensure_isolated(module: str) -> None:
    """Re-run ``python -m module ...`` under ``unshare -n`` unless already isolated.

    iroh sends a UPnP probe on the LAN per bind: a benchmark that binds hundreds of
    endpoints must not do that on the host's network.
    """
    if os.environ.get(_MARK) or os.geteuid() != 0 or not shutil.which("unshare"):
        if not os.environ.get(_MARK):
            print("note: not root, running on the host's loopback", file=sys.stderr)
        return
    inner = " ".join(shlex.quote(a) for a in [sys.executable, "-m", module, *sys.argv[1:]])
    os.environ[_MARK] = "1"
    os.execvp("unshare", ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"])
