"""User-space packet delay: the process behind the nemesis's ``latency`` fault.

This kernel has no ``netem`` qdisc and cannot load modules, so delay is done in user space:
iptables rules send a link's packets to an NFQUEUE, and this process, running *inside* the
node's network namespace (a queue belongs to the namespace of the netlink socket bound to it),
holds each packet for a fixed time and then accepts it, in arrival order::

    ip netns exec <ns> python3 .../delayer.py --queue 100 --ms 50

It prints ``ready`` once bound (rules must not queue packets before that: without a listener
the kernel drops them) and on SIGTERM/SIGINT, or when its parent (the test process) is gone,
releases what it holds and exits 0. It imports
only the standard library and ``netfilterqueue`` so that it starts fast as a plain script.
Exit codes: 0 stopped, 2 bad arguments, 3 the queue cannot be bound (no NFQUEUE support or
no ``netfilterqueue``).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

#: Packets the kernel may queue for us before it drops new ones (default 1024 is too few at 100+ ms).
MAX_QUEUED = 65536
EXIT_UNBOUND = 3
#: Longest sleep between two checks that the parent still lives (an orphan stops itself).
PARENT_CHECK = 1.0


class DelayLine(Generic[T]):
    """Items held for a fixed ``delay`` (seconds), released in arrival order.

    Pure scheduling: the caller passes the clock, so it is testable without a kernel. With one
    fixed delay, release times grow with arrival times, so a FIFO is the whole priority queue.
    """

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, not {delay!r}")
        self.delay = delay
        self._held: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, item: T, now: float) -> None:
        """Take ``item`` in at ``now``; it is due at ``now + delay``."""
        self._held.append((now + self.delay, item))

    def due(self, now: float) -> list[T]:
        """Remove and return every item due at ``now``, oldest first."""
        out = []
        while self._held and self._held[0][0] <= now:
            out.append(self._held.popleft()[1])
        return out

    def wait(self, now: float) -> float | None:
        """Seconds until the next item is due (0 if overdue), ``None`` when nothing is held."""
        return max(0.0, self._held[0][0] - now) if self._held else None

    def drain(self) -> list[T]:
        """Remove and return everything held, oldest first."""
        out = [item for _, item in self._held]
        self._held.clear()
        return out


def run(queue: int, delay: float) -> int:
    """Delay every packet of NFQUEUE ``queue`` by ``delay`` seconds until SIGTERM/SIGINT."""
    try:
        from netfilterqueue import COPY_META, NetfilterQueue
        nfq = NetfilterQueue()
        line: DelayLine = DelayLine(delay)
        # COPY_META: the verdict needs only the packet id, never its bytes.
        nfq.bind(queue, lambda packet: line.hold(packet, time.monotonic()), max_len=MAX_QUEUED,
                 mode=COPY_META, sock_len=4 << 20)
    except (ImportError, OSError) as exc:
        print(f"delayer: cannot bind NFQUEUE {queue}: {exc}", file=sys.stderr, flush=True)
        return EXIT_UNBOUND
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a signal wakes select(); the handler just flags the stop
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    queue_fd, parent = nfq.get_fd(), os.getppid()
    print("ready", flush=True)
    try:
        while not stopping and os.getppid() == parent:
            for packet in line.due(time.monotonic()):
                packet.accept()
            wait = line.wait(time.monotonic())
            timeout = PARENT_CHECK if wait is None else min(wait, PARENT_CHECK)
            readable, _, _ = select.select([queue_fd, wake_r], [], [], timeout)
            if queue_fd in readable:
                nfq.run(block=False)
    finally:
        for packet in line.drain():  # healed: what is held goes out now, nothing is dropped
            packet.accept()
        nfq.unbind()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE number (0-65535)")
    parser.add_argument("--ms", type=float, required=True, help="delay of every packet, milliseconds")
    args = parser.parse_args(argv)
    if not 0 <= args.queue <= 65535 or args.ms < 0:
        parser.error("--queue must be 0-65535 and --ms >= 0")
    return run(args.queue, args.ms / 1000.0)


if __name__ == "__main__":
    sys.exit(main())
