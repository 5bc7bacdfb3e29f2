"""CPU time of processes and of their threads, read from ``/proc``.

A process's total (``process_ns``, from its CPU-time clock) counts every thread it ever had,
in nanoseconds. ``threads`` reads each live thread's
``schedstat`` (nanoseconds) and groups the threads by what they are: the event loop (the
main thread), iroh's runtime (the bindings' tokio threads), and the rest (the OTLP export
thread, executors). Dividing a difference of two readings by the operations done between them
gives CPU per operation, per group: what showed that half of a raw round trip's CPU is
iroh's runtime thread, and what a produce spends over it.

A process's total between two readings comes from its CPU-time clock (nanoseconds, every
thread it had in the window, ended ones too); the event loop's and iroh's runtime's shares
from their threads' ``schedstat``; "other threads" is the rest of the total. Summing live
threads alone would lose a thread that ends between two readings, and with it the window's
total could shrink below zero (an HTTP server's connection threads do end).

Each thread's ``schedstat`` also says how long it was ready to run but waited for a CPU
(``per_op``'s "... waiting for a core", for the event loop and iroh's runtime): on a 2-core
machine running two nodes' loops and runtimes, how long a thread woken for a produce waits
while the cores run other work.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

GROUPS = ("event loop", "iroh runtime", "other threads")
NAMED = GROUPS[:2]  # the groups read from their own threads; "other threads" is the rest of the total
_RUNTIME_THREADS = ("tokio", "async-compat")  # what iroh's bindings name their runtime's threads
_CPUCLOCK_SCHED = 2  # the kernel's process CPU clocks: all its threads' run time, in ns

Threads = dict[int, tuple[str, int]]  # thread id -> (group, nanoseconds so far)


class Sample(NamedTuple):
    """One process at one moment: its CPU time so far and its live threads', and how long each
    of those has waited for a CPU while it could run (``None``: not read)."""

    process_ns: int
    threads: Threads
    waiting: Threads | None = None


Reading = dict[str, Sample]  # label -> its process's sample


def process_ns(pid: int) -> int:
    """CPU time a process has used so far, in nanoseconds, from its CPU-time clock (the
    clock id Linux gives process ``pid``: ``clock_getcpuclockid``, which Python lacks)."""
    return time.clock_gettime_ns(((~pid) << 3) | _CPUCLOCK_SCHED)


def group_of(pid: int, tid: int, name: str) -> str:
    """The group of thread ``tid`` (named ``name``) of process ``pid``: one of ``GROUPS``."""
    if tid == pid:
        return "event loop"
    return "iroh runtime" if name.startswith(_RUNTIME_THREADS) else "other threads"


WAITED = "waiting for a core"  # ``per_op``'s keys for the waits: "event loop waiting for a core"


def threads(pid: int) -> tuple[Threads, Threads]:
    """Each of ``pid``'s live threads, its group and its nanoseconds so far: on a CPU, and ready
    to run but waiting for one (``schedstat``'s first two fields)."""
    on_cpu: Threads = {}
    waiting: Threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            ran, waited = (int(f) for f in Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[:2])
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        group = group_of(pid, int(tid), name)
        on_cpu[int(tid)], waiting[int(tid)] = (group, ran), (group, waited)
    return on_cpu, waiting


def reading(pids: dict[str, int]) -> Reading:
    """A ``Sample`` of each labelled process, its threads' waits for a CPU with it."""
    return {label: Sample(process_ns(pid), *threads(pid)) for label, pid in pids.items()}


def _named_groups(then: Threads, now: Threads) -> dict[str, int]:
    """Nanoseconds the event loop's and iroh runtime's threads added between two readings."""
    named = dict.fromkeys(NAMED, 0)
    for tid, (group, ns) in now.items():
        if group in named:
            earlier = then.get(tid, (group, 0))[1]
            named[group] += ns - earlier if earlier <= ns else ns  # less than before: a new thread, same id
    return named


def per_op(before: Reading, after: Reading, ops: int) -> dict[str, dict[str, float]]:
    """µs of CPU per operation of each process between two readings: its total, and that
    total by group (the event loop's and iroh's runtime's from their threads, the rest
    under "other threads"); and where both readings have the threads' waits, how long the
    event loop and iroh's runtime waited for a core (``"<group> waiting for a core"``)."""
    out: dict[str, dict[str, float]] = {}
    for label, now in after.items():
        then = before[label]
        named = _named_groups(then.threads, now.threads)
        total = now.process_ns - then.process_ns
        # The threads and the clock are read a moment apart: the rest may come out a hair below zero.
        rest = max(0, total - sum(named.values()))
        out[label] = {**{g: ns / ops / 1e3 for g, ns in named.items()}, "other threads": rest / ops / 1e3,
                      "total": total / ops / 1e3}
        if then.waiting is not None and now.waiting is not None:
            out[label] |= {f"{g} {WAITED}": ns / ops / 1e3
                           for g, ns in _named_groups(then.waiting, now.waiting).items()}
    return out
