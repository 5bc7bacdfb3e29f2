"""The paced echo baseline: each side works before it sends, and the server's work is not
counted as transport time."""

from __future__ import annotations

import statistics
import time

import pytest

from bench.raw_echo import busy, in_process_round_trips


def test_busy_works_at_least_as_long_as_asked():
    start = time.perf_counter()
    busy(0.002)
    assert time.perf_counter() - start >= 0.002


@pytest.mark.asyncio
async def test_a_paced_round_trip_leaves_out_the_servers_work():
    pace = 0.005  # far above a loopback round trip (~0.3 ms), so counting it would show
    samples = await in_process_round_trips(20, pace_s=pace)
    assert len(samples) == 20
    # Both ends share one loop here: the echo's 5 ms of work happens inside every round trip,
    # and only the transport's part may remain: counted, every sample would be over 5 ms. (The
    # median, not every sample: on a loaded machine one round trip alone can take 5 ms.)
    assert all(s > 0 for s in samples), samples
    assert statistics.median(samples) < pace, samples
