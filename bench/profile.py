"""Where a lone cross-mesh produce's time goes, against a raw echo's: py-spy profiles of both,
taken in the same run. Run: ``python -m bench.profile`` (~10 s; needs py-spy:
``pip install -e '.[profile]'``).

Four processes are sampled, each while it does one thing at a time: the two sides of a raw
iroh echo between two processes whose server appends 100 B and fsyncs before it answers (a
produce with no code of ours between the transport and the disk: the suite's "composite"), then
the gateway and mesh2's broker of a 2-mesh cluster while the gateway's writer produces records
of 100 B to that broker one at a time (``--tracing``: every span recorded, exported to a sink,
or the SDK off; ``--in-flight N``: N produces at a time, a loaded writer's profile, where the
echo's one-at-a-time figures are context only).

py-spy samples a thread only when it is not asleep: on a core, waiting for one, or waiting on
the disk or a lock. So the samples of each event loop's thread, divided by the rate and the
operations, are the µs a round trip or produce keeps that thread busy, its critical path's
share; the CPU each process's threads used by their own clocks (``bench/cpu.py``) over the same
operations is printed beside it. Each sample counts for the code its innermost Python frame
runs (``bench/stacks.py`` puts it in a category: the disk, tracing, framing, iroh's bindings,
the event loop, the fabric); a call into C is its caller's (an ``fdatasync``, a poll of the
bindings' Rust future and the lock it may wait for). The columns "gateway - client" and
"broker - server" are what the fabric's side adds over the raw echo's, category by category:
where the produce's time over its floor goes. The bindings' share is also given by the bindings'
call each sample served (``SendStream.write_all``, ``RecvStream.read``: ``stacks.bindings_calls``),
so a node's writes and reads stand beside the echo's.

The samplers do not pause the processes (py-spy's ``--nonblocking``), so the processes run
almost as fast as unwatched, and a stack may now and then be read half-changed. ``--native``
adds the native frames below the Python ones (py-spy must pause each process to read them: read
only the shares then). The stacks are kept (``<results>/profile/*.txt``: py-spy's raw format,
flamegraph.pl's input, which speedscope opens too) for a closer look than the tables give.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import cpu, stacks
from bench.isolation import ensure_isolated
from bench.otlp_sink import OtlpSink
from bench.produce import (
    gateway_writes,
    start_warm_cluster,
    stop_cluster,
    tracing_modes,
)
from bench.raw_echo import RawEcho
from bench.report import RESULTS, announced_last_run, save, table
from fabric import event_loop

MODES = ("on", "exported", "off")
SIDES = {"gateway": "echo client", "broker": "echo server"}  # each fabric process and its raw counterpart
INSTALL_HINT = "py-spy is not installed: pip install py-spy (or pip install -e '.[profile]')"


class SamplerError(RuntimeError):
    """py-spy could not profile a process (not installed, not permitted, the process gone)."""


class Sampler:
    """``py-spy record`` of one process, from the moment it says it samples until ``stop``;
    the stacks go to ``output`` (py-spy's raw format)."""

    def __init__(self, pid: int, output: Path, rate: int, native: bool = False) -> None:
        self.pid, self.output, self.rate, self.native = pid, output, rate, native
        self._process: asyncio.subprocess.Process | None = None
        self._said: list[str] = []

    async def start(self, timeout: float = 15.0) -> None:
        spy = shutil.which("py-spy")
        if spy is None:
            raise SamplerError(INSTALL_HINT)
        self.output.unlink(missing_ok=True)  # an earlier run's stacks must not pass for this one's
        args = [spy, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw", "--threads",
                "--full-filenames", "--output", str(self.output)]
        # py-spy reads native stacks only from a paused process
        args += ["--native"] if self.native else ["--nonblocking"]
        self._process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            async with asyncio.timeout(timeout):
                while line := (await self._process.stdout.readline()).decode(errors="replace"):  # type: ignore[union-attr]
                    self._said.append(line.rstrip())
                    if "Sampling process" in line:
                        return
        except TimeoutError:
            pass
        await self.close()
        raise SamplerError(f"py-spy did not start sampling process {self.pid}: {self._told()}")

    async def stop(self, timeout: float = 30.0) -> Path:
        """Stop sampling (py-spy writes its stacks on SIGINT); the stacks' file."""
        process = self._process
        if process is None:
            raise SamplerError("the sampler was never started")
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(timeout):
                rest = await process.stdout.read()  # type: ignore[union-attr]
                await process.wait()
        except TimeoutError:
            await self.close()
            raise SamplerError(f"py-spy of process {self.pid} did not stop within {timeout:g}s") from None
        self._said += rest.decode(errors="replace").splitlines()
        if not self.output.exists():
            raise SamplerError(f"py-spy wrote no stacks for process {self.pid}: {self._told()}")
        return self.output

    async def close(self) -> None:
        """Kill the sampler if it still runs (its stacks are lost): on the way out of a failure."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    def _told(self) -> str:
        return " / ".join(line for line in self._said if line.strip())[-800:] or "(it said nothing)"


async def sampled(pids: dict[str, int], out: Path, rate: int, native: bool, ops: int,
                  work: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """Run ``await work()`` (``ops`` operations) with every process of ``pids`` sampled and its
    threads' CPU read before and after: each process's stacks and its CPU per operation."""
    samplers = {label: Sampler(pid, out / f"{label.replace(' ', '-')}.txt", rate, native) for label, pid in pids.items()}
    started: list[Sampler] = []
    try:
        for sampler in samplers.values():
            await sampler.start()
            started.append(sampler)
        before = cpu.reading(pids)
        await work()
        spent = cpu.per_op(before, cpu.reading(pids), ops)
        files = {label: await sampler.stop() for label, sampler in samplers.items()}
    finally:
        for sampler in started:
            await sampler.close()
    return {label: {"stacks": stacks.read(files[label]), "cpu_us": spent[label], "file": str(files[label])}
            for label in pids}


def per_op_us(samples: int, rate: int, ops: int) -> float:
    return samples * 1e6 / rate / ops


def summarize(profiles: dict[str, dict[str, Any]], rate: int, ops: int) -> dict[str, Any]:
    """Per process: its event loop thread's samples, its busy µs an operation in all and by
    category, its top innermost frames; its threads' CPU by their clocks beside them."""
    out: dict[str, Any] = {}
    for label, profile in profiles.items():
        found = profile["stacks"]
        groups = stacks.by_category(found)
        out[label] = {
            "samples": stacks.total(found, stacks.MAIN_THREAD),
            "loop_clock_us": profile["cpu_us"]["event loop"],
            "runtime_clock_us": profile["cpu_us"]["iroh runtime"],
            "loop_sampled_us": per_op_us(stacks.total(found, stacks.MAIN_THREAD), rate, ops),
            "by_category_us": {c: per_op_us(groups[stacks.MAIN_THREAD][c], rate, ops) for c in stacks.CATEGORIES},
            "bindings_us": {call: per_op_us(n, rate, ops) for call, n in stacks.bindings_calls(found).items()},
            "top": [(name, per_op_us(n, rate, ops)) for name, n in stacks.top_functions(found, 12)],
            "stacks_file": profile["file"],
        }
    return out


SIDE_COLUMNS = ["echo client", "gateway", "gateway - client", "echo server", "broker", "broker - server"]


def beside_echo(name: str, us: dict[str, float]) -> list[Any]:
    """A row of ``SIDE_COLUMNS``: each fabric side beside its raw echo side, and the difference."""
    row: list[Any] = [name]
    for side, raw in SIDES.items():
        row += [us[raw], us[side], us[side] - us[raw]]
    return row


def print_report(summary: dict[str, Any], mode: str, ops: int, rate: int, in_flight: int = 1) -> None:
    produces = "a lone cross-mesh produce" if in_flight == 1 else f"a cross-mesh produce, {in_flight} in flight"
    print(f"\na raw round trip (echo, one at a time) or {produces} (tracing {mode}), µs each; {ops} of each, "
          f"sampled at {rate} Hz. Busy: the event loop's thread seen not asleep (on a core, waiting for one, or in "
          "the disk), samples / rate / operations; beside it the CPU its threads used, by their clocks")
    print(table(["process", "event loop busy (sampled)", "event loop CPU (clock)", "iroh runtime CPU (clock)",
                 "event loop samples"],
                [[label, s["loop_sampled_us"], s["loop_clock_us"], s["runtime_clock_us"], s["samples"]]
                 for label, s in summary.items()]))
    print("\nthe event loop's thread busy, by what its innermost Python frame runs (a call into C is its "
          "caller's: an fsync, a poll of the bindings' Rust), µs an operation; '- client' and '- server': "
          "what the fabric's side adds over the raw echo's")
    totals = {label: s["loop_sampled_us"] for label, s in summary.items()}
    print(table(["category", *SIDE_COLUMNS],
                [beside_echo(category, {label: s["by_category_us"][category] for label, s in summary.items()})
                 for category in stacks.CATEGORIES] + [beside_echo("all", totals)]))
    by_call = {label: s.get("bindings_us", {}) for label, s in summary.items()}  # none in a run saved before it
    calls = sorted({call for us in by_call.values() for call, each in us.items() if each >= 1.0},
                   key=lambda call: (-max(us.get(call, 0.0) for us in by_call.values()), call))
    if calls:
        print("\niroh's bindings on the event loop's thread, by the bindings' call each sample served (its poll, "
              "the bytes' copies, the handles), µs an operation")
        print(table(["call", *SIDE_COLUMNS],
                    [beside_echo(call, {label: us.get(call, 0.0) for label, us in by_call.items()}) for call in calls]
                    + [beside_echo("all", {label: s["by_category_us"][stacks.CATEGORIES[3]]
                                            for label, s in summary.items()})]))
    for side in SIDES:
        print(f"\n{side}: the innermost frames the event loop's thread was busy in most, µs a produce")
        print(table(["function (file:line)", "µs"], summary[side]["top"]))
    folders = sorted({str(Path(s["stacks_file"]).parent) for s in summary.values()})
    print(f"\nstacks (py-spy's raw format, for flamegraph.pl or speedscope): {', '.join(folders)}")


async def main(args: argparse.Namespace) -> None:
    out = RESULTS / "profile"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="meshfabric-profile-") as scratch, OtlpSink() as sink:
        root = Path(scratch)
        print(f"raw echo: {args.ops} round trips (the server fsyncs a 100 B append before each echo), sampled",
              file=sys.stderr, flush=True)
        async with RawEcho(fsync_to=root / "composite.bin") as echo:
            echo_profiles = await sampled({"echo client": os.getpid(), "echo server": echo.server.pid}, out,
                                          args.rate, args.native, args.ops, lambda: echo.round_trips(args.ops))
        print(f"cluster (tracing {args.tracing}): the gateway's writer, {args.ops} produces, {args.in_flight} at a time, "
              "sampled",
              file=sys.stderr, flush=True)
        nodes = await asyncio.to_thread(start_warm_cluster, root / "cluster", tracing_modes(sink.endpoint)[args.tracing], 1)
        try:
            fabric_profiles = await sampled(
                {"gateway": nodes["gw"].pid, "broker": nodes["b2"].pid}, out, args.rate, args.native, args.ops,
                lambda: asyncio.to_thread(gateway_writes, nodes, args.ops, concurrency=args.in_flight,
                                          latencies=False))
        finally:
            await asyncio.to_thread(stop_cluster, nodes)
    summary = summarize({**echo_profiles, **fabric_profiles}, args.rate, args.ops)
    print_report(summary, args.tracing, args.ops, args.rate, args.in_flight)
    path = save("profile", {"tracing": args.tracing, "ops": args.ops, "rate_hz": args.rate, "native": args.native,
                            "in_flight": args.in_flight,
                            "processes": summary})
    print(f"\nresults: {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=3000, help="round trips, then produces, each sampled (default 3000)")
    parser.add_argument("--rate", type=int, default=1000, help="samples a second (default 1000)")
    parser.add_argument("--tracing", choices=MODES, default="on",
                        help="every span recorded (on, the default), exported to a sink, or the SDK off")
    parser.add_argument("--in-flight", type=int, default=1,
                        help="produces the gateway keeps in flight (default 1: lone produces, the p50's path)")
    parser.add_argument("--report", action="store_true", help="print the tables of the last saved run and exit")
    parser.add_argument("--native", action="store_true",
                        help="native frames too (py-spy --native, which pauses each process to read its stack: "
                             "the processes run slower, read the shares)")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.rate < 1 or args.in_flight < 1:
        parser.error("--ops, --rate and --in-flight must be positive")
    return args


def print_last_report() -> None:
    """The last saved run's tables again, without running anything."""
    results = announced_last_run("profile")
    print_report(results["processes"], results["tracing"], results["ops"], results["rate_hz"], results["in_flight"])


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.report:
        print_last_report()
        raise SystemExit(0)
    ensure_isolated("bench.profile")
    if shutil.which("py-spy") is None:
        raise SystemExit(f"bench.profile: {INSTALL_HINT}")
    event_loop.run(main(arguments))
