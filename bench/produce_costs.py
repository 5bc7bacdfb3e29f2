"""Each round's cost of each tracing mode, and its p50 over its floor: ``bench.produce`` pairs
every mode with the SDK off measured in the same round, so a machine that gets faster or slower
between rounds moves both sides of a pair alike."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any


def paired_costs(rounds: dict[str, list[dict[str, Any]]], measure: str = "throughput_rps") -> dict[str, list[float]]:
    """Each round's cost of each tracing mode: 1 - its writer throughput (``measure``: one
    record a produce, or ``"batched_rps"``) / the SDK off's in that round."""
    return _paired(rounds, lambda mode, off: 1 - mode[measure] / off[measure])


def paired_cpu_costs(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, list[float]]:
    """Each round's cost of each tracing mode in the nodes' own CPU: 1 - the SDK off's CPU a
    record (gateway + broker) / the mode's in that round: what a writer bound by the nodes'
    CPU would lose in throughput (this one is bound by its produces' latency). Only the nodes'
    own CPU time counts, so what else the machine runs moves it less directly than throughput
    (through the caches, not the clock); its intervals came out about as wide all the same."""
    return _paired(rounds, lambda mode, off: 1 - off["node_cpu_us"] / mode["node_cpu_us"])


def _paired(rounds: dict[str, list[dict[str, Any]]], cost: Callable[[dict, dict], float]) -> dict[str, list[float]]:
    """``cost(mode's round, the SDK off's round)`` for each mode but the SDK off, round by round."""
    return {mode: [cost(r, off) for r, off in zip(done, rounds["off"], strict=True)]
            for mode, done in rounds.items() if mode != "off"}


def p50_ratios(rounds: dict[str, list[dict[str, Any]]], floors: list[float]) -> dict[str, list[float]]:
    """Each round's p50 of each mode's sequential produces over that round's own floor: how
    far the pooled ratio moves from round to round on a machine that changes speed."""
    return {mode: [statistics.median(r["latencies_s"]) / floor for r, floor in zip(done, floors, strict=True)]
            for mode, done in rounds.items()}
