"""CPU readings from /proc: a thread's work lands in its group, and per-operation arithmetic."""

from __future__ import annotations

import os
import threading
import time

from bench import cpu


def _spin(cpu_seconds: float) -> None:
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def test_the_main_threads_work_counts_as_the_event_loop_and_another_threads_as_other():
    pid = os.getpid()
    spun, release = threading.Event(), threading.Event()

    def worker() -> None:
        _spin(0.05)
        spun.set()
        release.wait(10)  # alive while it is read: a thread's time is read from its own entry

    before = cpu.by_thread(pid)
    _spin(0.05)
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert spun.wait(10)
        after = cpu.by_thread(pid)
    finally:
        release.set()
        thread.join()
    assert after["event loop"] - before["event loop"] >= 0.05e9
    assert after["other threads"] - before["other threads"] >= 0.05e9


def test_threads_are_grouped_by_what_they_are():
    assert cpu.group_of(100, 100, "python") == "event loop"
    assert cpu.group_of(100, 101, "tokio-rt-worker") == "iroh runtime"
    assert cpu.group_of(100, 102, "async-compat/to") == "iroh runtime"
    assert cpu.group_of(100, 103, "OtelBatchSpanPr") == "other threads"


def test_per_op_divides_each_groups_difference_and_totals_them():
    before = {"node": {"event loop": 1_000, "iroh runtime": 0, "other threads": 500}}
    after = {"node": {"event loop": 401_000, "iroh runtime": 200_000, "other threads": 500}}
    assert cpu.per_op(before, after, 100) == {
        "node": {"event loop": 4.0, "iroh runtime": 2.0, "other threads": 0.0, "total": 6.0}}


def test_process_seconds_grows_with_the_processes_work():
    before = cpu.process_seconds(os.getpid())
    _spin(0.05)
    assert cpu.process_seconds(os.getpid()) - before >= 0.04  # clock ticks: 10 ms resolution
