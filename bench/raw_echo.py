"""The transport's floor: a raw iroh echo between two processes, as a produce from the gateway
to the broker crosses (optionally fsyncing an append before each echo: the composite; or each
side busy before it sends: the paced echo), the same echo in one process for reference, and
commits alone (back to back, or each after a round trip: the rhythm of produces).
``bench.produce`` measures the fabric against these. The server side runs as ``python -m
bench.raw_echo`` in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import iroh

from bench.isolation import _MARK as SAME_NETWORK
from bench.isolation import ensure_isolated
from fabric import event_loop

WARMUP = 20  # round trips (and produces) before any is timed
PACE_US = 100  # the paced echo: work each side does before it sends (~a produce's Python a side)


def busy(seconds: float) -> None:
    """Work for ``seconds``: spin, so the thread stays on the CPU as a handler's would."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def echo_server(fsync_to: str | None = None, pace_s: float = 0.0) -> None:
    """The raw side of the baseline, in a process of its own (``python -m bench.raw_echo``): print the
    endpoint's address, echo everything on the first bi stream, exit when it finishes; with
    ``fsync_to``, append 100 B to that file and fsync it before each echo; with ``pace_s``,
    work that long before each echo."""
    a = await iroh.Endpoint.bind(iroh.EndpointOptions(preset=iroh.preset_minimal(), bind_addr="127.0.0.1:0"))
    a.set_alpns([b"bench/echo"])
    print(json.dumps({"id": str(a.id()), "addrs": list(a.addr().direct_addresses())}), flush=True)
    fd = os.open(fsync_to, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if fsync_to else None
    await echo(a, fd, pace_s)
    await asyncio.sleep(0.2)
    await a.close()


async def echo(endpoint: iroh.Endpoint, fsync_fd: int | None = None, pace_s: float = 0.0) -> None:
    """Echo everything on the first bi stream of the first connection, until it finishes
    (each read appended to ``fsync_fd`` and fsynced first, if given; ``pace_s`` of work before
    each echo)."""
    conn = await (await (await endpoint.accept_next()).accept()).connect()
    bi = await conn.accept_bi()
    recv, send = bi.recv(), bi.send()
    while data := await recv.read(65536):
        if fsync_fd is not None:
            os.write(fsync_fd, b"r" * 100)
            os.fsync(fsync_fd)
        if pace_s:
            busy(pace_s)
        await send.write_all(data)
    await send.finish()


class RawEcho:
    """One open iroh stream to an echo server in another process: the transport's floor
    between two processes, as a produce from the gateway to the broker crosses (with
    ``fsync_to``, the server fsyncs an append to that file before each echo; with ``pace_s``,
    each side works that long before it sends, and round trips are reported less the server's
    part)."""

    def __init__(self, fsync_to: Path | None = None, pace_s: float = 0.0) -> None:
        self.fsync_to = fsync_to
        self.pace_s = pace_s

    async def __aenter__(self) -> "RawEcho":
        extra = ["--fsync-to", str(self.fsync_to)] if self.fsync_to else []
        extra += ["--pace-us", str(self.pace_s * 1e6)] if self.pace_s else []
        self.server = subprocess.Popen([sys.executable, "-m", "bench.raw_echo", *extra],
                                       stdout=subprocess.PIPE, env={**os.environ, SAME_NETWORK: "1"})
        peer = json.loads(self.server.stdout.readline())  # type: ignore[union-attr]
        self.endpoint = await iroh.Endpoint.bind(iroh.EndpointOptions(preset=iroh.preset_minimal(),
                                                                      bind_addr="127.0.0.1:0"))
        conn = await self.endpoint.connect(
            iroh.EndpointAddr(iroh.EndpointId.from_string(peer["id"]), None, peer["addrs"]), b"bench/echo")
        bi = await conn.open_bi()
        self.send, self.recv = bi.send(), bi.recv()
        await echo_round_trips(self.send, self.recv, WARMUP, self.pace_s)
        return self

    async def round_trips(self, n: int) -> list[float]:
        """``n`` 64-byte echoes, one at a time."""
        return await echo_round_trips(self.send, self.recv, n, self.pace_s)

    async def in_rhythm(self, commits: Commits, n: int) -> tuple[list[float], list[float]]:
        """``n`` steps of one round trip, then one commit, each timed alone: the floor's two
        parts in the rhythm of sequential produces, whose commits come one round trip and more
        apart. Back to back, a commit here costs ~0.5-0.9x what it costs after a gap of 0.2-0.8 ms,
        spent asleep or spinning alike (the disk's side, not the CPU's), and a round trip right
        after another is cheaper than one after a commit: neither is what any produce meets."""
        round_trips, committed = [], []
        for _ in range(n):
            round_trips += await echo_round_trips(self.send, self.recv, 1, self.pace_s)
            committed.append(commits.one())
        return round_trips, committed

    async def throughput(self, n: int, batch: int) -> float:
        """Messages per second: ``batch`` 100-byte messages per write, echoed, ``n`` in all."""
        chunk = b"m" * 100 * batch
        start = time.perf_counter()
        for _ in range(max(1, n // batch)):
            await self.send.write_all(chunk)
            await self.recv.read_exact(len(chunk))
        return max(1, n // batch) * batch / (time.perf_counter() - start)

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.send.finish()
            await asyncio.to_thread(self.server.wait, 10)
            await self.endpoint.close()
        finally:
            if self.server.poll() is None:
                self.server.kill()


async def echo_round_trips(send: iroh.SendStream, recv: iroh.RecvStream, n: int,
                           pace_s: float = 0.0) -> list[float]:
    """``n`` round trips of 64 B; with ``pace_s``, work that long before each (untimed) and
    take the server's ``pace_s`` off each sample."""
    samples = []
    for _ in range(n):
        if pace_s:
            busy(pace_s)
        start = time.perf_counter()
        await send.write_all(b"x" * 64)
        await recv.read_exact(64)
        samples.append(time.perf_counter() - start - pace_s)
    return samples


async def in_process_round_trips(n: int, pace_s: float = 0.0) -> list[float]:
    """The same echoes with both endpoints in this process (one loop): for reference."""
    opts = lambda: iroh.EndpointOptions(preset=iroh.preset_minimal(), bind_addr="127.0.0.1:0")  # noqa: E731
    a, b = await iroh.Endpoint.bind(opts()), await iroh.Endpoint.bind(opts())
    a.set_alpns([b"bench/echo"])
    server = asyncio.create_task(echo(a, pace_s=pace_s))
    conn = await b.connect(iroh.EndpointAddr(a.id(), None, a.addr().direct_addresses()), b"bench/echo")
    bi = await conn.open_bi()
    send, recv = bi.send(), bi.recv()
    await echo_round_trips(send, recv, WARMUP, pace_s)
    samples = await echo_round_trips(send, recv, n, pace_s)
    await send.finish()
    await asyncio.wait_for(server, 5)
    await b.close()
    await a.close()
    return samples


class Commits:
    """A file that 100 B records are committed to one at a time, each commit timed: appended
    and ``fsync``ed (the target's floor), or with ``grown``, written into zeros the file was
    grown by and ``fdatasync``ed (the broker's log commits so: the size does not change, only
    the data is written). ``with Commits(path, n) as commits: commits.one()``."""

    def __init__(self, path: Path, n: int, grown: bool = False) -> None:
        self._grown, self._n = grown, 0
        if grown:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.posix_fallocate(self._fd, 0, 100 * n)
            os.fsync(self._fd)
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def one(self) -> float:
        """Seconds: write the next 100 B and commit them."""
        start = time.perf_counter()
        if self._grown:
            os.pwrite(self._fd, b"r" * 100, 100 * self._n)
            os.fdatasync(self._fd)
        else:
            os.write(self._fd, b"r" * 100)
            os.fsync(self._fd)
        self._n += 1
        return time.perf_counter() - start

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)


def fsyncs(directory: Path, n: int) -> list[float]:
    """Seconds each: ``n`` appends of 100 B, each ``fsync``ed, back to back."""
    with Commits(directory / "fsync.bin", n) as commits:
        return [commits.one() for _ in range(n)]


if __name__ == "__main__":
    ensure_isolated("bench.raw_echo")  # started by RawEcho inside the benchmark's namespace: a no-op there
    parser = argparse.ArgumentParser(description="the echo server of the raw baselines (started by RawEcho)")
    parser.add_argument("--fsync-to", help="append 100 B to this file and fsync it before each echo")
    parser.add_argument("--pace-us", type=float, default=0.0, help="work this long before each echo")
    parsed = parser.parse_args()
    event_loop.run(echo_server(parsed.fsync_to, parsed.pace_us / 1e6))
