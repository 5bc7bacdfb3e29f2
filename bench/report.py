"""Shared output of the benchmarks: percentiles, a plain-text table, JSON with machine info."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fabric import event_loop, spans

RESULTS_ENV = "MESHFABRIC_BENCH_RESULTS"
# Where every benchmark writes its JSON (and the suite reads it back): ``bench/results/``, or the
# directory the variable names (a run kept apart from the last one, a test's temporary directory).
RESULTS = Path(os.environ.get(RESULTS_ENV) or Path(__file__).parent / "results")


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by nearest rank."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples_s, 50) * 1e3, "p99_ms": percentile(samples_s, 99) * 1e3,
            "mean_ms": statistics.fmean(samples_s) * 1e3, "n": len(samples_s)}


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu": cpu_model(), "event_loop": event_loop.chosen(), "span_path": spans.path_in_use(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first CPU's name, model number and clock, from ``cpuinfo`` (a virtual machine's name
    alone, "Intel Xeon Processor", does not tell two hosts apart; its model number does), or
    ``platform.processor()`` where there is none."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return platform.processor() or "unknown"
    first_cpu = (line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in first_cpu}
    name = fields.get("model name") or platform.processor() or "unknown"
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"family {fields['cpu family']} model {fields['model']}")
    if "cpu MHz" in fields:
        details.append(f"{float(fields['cpu MHz']):.0f} MHz")
    return f"{name} ({', '.join(details)})" if details else name


def median_interval(samples: list[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free ~95% confidence interval of the median: the order statistics
    ``k`` places in from either end, ``k = (n - z * sqrt(n)) / 2`` (the sign test's interval)."""
    ordered = sorted(samples)
    k = max(0, int((len(ordered) - z * len(ordered) ** 0.5) / 2))
    return ordered[k], ordered[len(ordered) - 1 - k]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (readable in a terminal too)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def save(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2))
    return path


def load(name: str, results: Path = RESULTS) -> dict[str, Any]:
    """What ``save(name, ...)`` wrote (in ``results``, default ``RESULTS``)."""
    return json.loads((results / f"{name}.json").read_text())


def last_run(name: str) -> dict[str, Any]:
    """``bench.<name>``'s last saved run, for its ``--report``; none saved exits saying what to run."""
    try:
        return load(name)
    except FileNotFoundError:
        raise SystemExit(f"bench.{name}: no saved run at {RESULTS / f'{name}.json'}: "
                         f"run `python -m bench.{name}` first") from None


def announced_last_run(name: str) -> dict[str, Any]:
    """``last_run(name)``, after a line saying which run it is (when, and where it was saved)."""
    results = last_run(name)
    print(f"bench.{name}: the run of {results['machine']['date']} ({RESULTS / f'{name}.json'})")
    return results
