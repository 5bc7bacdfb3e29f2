"""CPU readings from /proc: a thread's work lands in its group, and per-operation arithmetic."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

from bench import cpu


def _spin(cpu_seconds: float) -> None:
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def test_the_main_threads_work_counts_as_the_event_loop_and_another_threads_as_other():
    pids = {"me": os.getpid()}
    spun, release = threading.Event(), threading.Event()

    def worker() -> None:
        _spin(0.05)
        spun.set()
        release.wait(10)

    before = cpu.reading(pids)
    _spin(0.05)
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert spun.wait(10)
        after = cpu.reading(pids)
    finally:
        release.set()
        thread.join()
    spent = cpu.per_op(before, after, 1)["me"]  # µs
    assert spent["event loop"] >= 0.05e6
    assert spent["other threads"] >= 0.05e6
    assert spent["total"] == pytest.approx(sum(spent[g] for g in cpu.GROUPS))


def test_a_thread_that_ends_between_two_readings_still_counts():
    # An HTTP server's connection thread, say: gone from /proc/<pid>/task at the second reading.
    pids = {"me": os.getpid()}
    started = threading.Event()
    release = threading.Event()

    def worker() -> None:
        started.set()
        release.wait(10)
        _spin(0.05)

    thread = threading.Thread(target=worker)
    thread.start()
    assert started.wait(10)
    before = cpu.reading(pids)  # the thread alive in it, before its work
    release.set()
    thread.join()
    spent = cpu.per_op(before, cpu.reading(pids), 1)["me"]
    # 0.05 s of the thread's own clock; the event loop's share is read a moment before the total
    assert spent["other threads"] >= 0.045e6
    assert spent["total"] >= 0.05e6
    assert all(us >= 0 for us in spent.values())


def test_threads_are_grouped_by_what_they_are():
    assert cpu.group_of(100, 100, "python") == "event loop"
    assert cpu.group_of(100, 101, "tokio-rt-worker") == "iroh runtime"
    assert cpu.group_of(100, 102, "async-compat/to") == "iroh runtime"
    assert cpu.group_of(100, 103, "OtelBatchSpanPr") == "other threads"


def test_per_op_divides_each_groups_difference_and_puts_the_rest_of_the_total_under_other():
    before = {"node": cpu.Sample(10_000, {100: ("event loop", 1_000), 101: ("iroh runtime", 0),
                                          102: ("other threads", 500), 103: ("iroh runtime", 90_000)})}
    # 102 ended; 103's id now belongs to a new runtime thread (less time than the old one had)
    after = {"node": cpu.Sample(1_010_000, {100: ("event loop", 401_000), 101: ("iroh runtime", 150_000),
                                            103: ("iroh runtime", 50_000)})}
    assert cpu.per_op(before, after, 100) == {
        "node": {"event loop": 4.0, "iroh runtime": 2.0, "other threads": 4.0, "total": 10.0}}


def test_per_op_never_reads_a_negative_rest():
    # The clock is read a moment after the threads: the rest of the total may come out a hair below zero.
    before = {"node": cpu.Sample(1_000, {100: ("event loop", 1_000)})}
    after = {"node": cpu.Sample(2_000, {100: ("event loop", 2_050)})}
    assert cpu.per_op(before, after, 1)["node"]["other threads"] == 0.0


def test_process_ns_grows_with_the_processes_work():
    before = cpu.process_ns(os.getpid())
    _spin(0.05)
    assert cpu.process_ns(os.getpid()) - before >= 0.04e9


def test_process_ns_reads_another_processes_cpu_clock():
    spin_then_wait = ("import sys, time\nend = time.process_time() + 0.1\n"
                      "while time.process_time() < end: pass\nsys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", spin_then_wait], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while cpu.process_ns(child.pid) < 0.1e9:
            assert time.monotonic() < deadline, "the child never spent its 0.1 s"
            time.sleep(0.01)
        assert cpu.process_ns(child.pid) >= 0.1e9
    finally:
        child.kill()
        child.wait()


def _hash_for(cpu_seconds: float) -> None:
    """Busy without the GIL (hashlib lets it go for large buffers), so two threads doing this
    compete for cores, not for the GIL."""
    data, end = bytes(1 << 20), time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        hashlib.sha256(data).digest()


def test_two_threads_on_one_core_each_wait_while_the_other_runs():
    pids = {"me": os.getpid()}
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # this thread only; the worker inherits it
    try:
        worker = threading.Thread(target=_hash_for, args=(0.05,))
        before = cpu.reading(pids)
        worker.start()
        _hash_for(0.05)
        worker.join()
        spent = cpu.per_op(before, cpu.reading(pids), 1)["me"]
    finally:
        os.sched_setaffinity(0, allowed)
    # One core for 0.1 s of work: while one ran, the other was ready and waited (slices of a few ms).
    assert spent["event loop waiting for a core"] >= 0.02e6
    assert spent["iroh runtime waiting for a core"] == 0


def test_waits_are_given_only_where_both_readings_have_them():
    before = {"node": cpu.Sample(0, {100: ("event loop", 0)}, {100: ("event loop", 0), 101: ("iroh runtime", 0)})}
    after = {"node": cpu.Sample(100_000, {100: ("event loop", 100_000)},
                                {100: ("event loop", 300_000), 101: ("iroh runtime", 100_000)})}
    assert cpu.per_op(before, after, 100)["node"] == {
        "event loop": 1.0, "iroh runtime": 0.0, "other threads": 0.0, "total": 1.0,
        "event loop waiting for a core": 3.0, "iroh runtime waiting for a core": 1.0}
    assert "event loop waiting for a core" not in cpu.per_op({"node": before["node"]._replace(waiting=None)},
                                                             after, 100)["node"]
