"""CPU time of processes and of their threads, read from ``/proc``.

A process's total (``process_seconds``) counts every thread it ever had, at the clock tick's
resolution: right for an idle node over seconds. ``by_thread`` reads each live thread's
``schedstat`` (nanoseconds) and groups the threads by what they are: the event loop (the
main thread), iroh's runtime (the bindings' tokio threads), and the rest (the OTLP export
thread, executors). Dividing a difference of two readings by the operations done between them
gives CPU per operation, per group: what showed that half of a raw round trip's CPU is
iroh's runtime thread, and what a produce spends over it.
"""

from __future__ import annotations

import os
from pathlib import Path

GROUPS = ("event loop", "iroh runtime", "other threads")
_RUNTIME_THREADS = ("tokio", "async-compat")  # what iroh's bindings name their runtime's threads

Reading = dict[str, dict[str, int]]  # label -> group -> nanoseconds


def process_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_of(pid: int, tid: int, name: str) -> str:
    """The group of thread ``tid`` (named ``name``) of process ``pid``: one of ``GROUPS``."""
    if tid == pid:
        return "event loop"
    return "iroh runtime" if name.startswith(_RUNTIME_THREADS) else "other threads"


def by_thread(pid: int) -> dict[str, int]:
    """Nanoseconds on the CPU so far of each group of ``pid``'s live threads."""
    totals = dict.fromkeys(GROUPS, 0)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
        totals[group_of(pid, int(tid), name)] += ns
    return totals


def reading(pids: dict[str, int]) -> Reading:
    """``by_thread`` of each labelled process."""
    return {label: by_thread(pid) for label, pid in pids.items()}


def per_op(before: Reading, after: Reading, ops: int) -> dict[str, dict[str, float]]:
    """µs of CPU per operation of each process and group between two readings (and their total)."""
    out: dict[str, dict[str, float]] = {}
    for label, groups in after.items():
        spent = {g: (ns - before[label].get(g, 0)) / ops / 1e3 for g, ns in groups.items()}
        out[label] = {**spent, "total": sum(spent.values())}
    return out
