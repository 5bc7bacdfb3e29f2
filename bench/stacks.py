"""Collapsed stacks read and summed up: where a process's sampled time went, by kind of code.

``py-spy record --format raw --threads --full-filenames`` writes one line per distinct stack,
``thread (<tid>): <name>;<frame>;<frame>... <count>``, each frame ``function (file:line)``, the
innermost last: flamegraph.pl's input, which speedscope also opens. A sample counts for the
code its innermost Python frame runs (self time): the time a frame spends in a C function it
calls (``os.fdatasync``, a bindings' FFI call, uvloop's C loop, the spans' C part) is that
frame's. So each sample's innermost frame is put into one of ``CATEGORIES`` by its file, and by
its source line where the file alone cannot say: a commit's ``fsync`` line is the disk's, and a
line that starts or ends a span (``with tracer.start_as_current_span(...)``, ``span.set_attribute``)
or carries trace context is tracing's, whatever module it is in.
"""

from __future__ import annotations

import linecache
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MAIN_THREAD = "MainThread"  # the event loop's thread in every process profiled here
OTHER_THREADS = "other threads"

# ``category`` checks in this order, the first match winning: tracing's modules before the
# fabric's, as they live in fabric/ too.
_TRACING_MODULES = {"spans.py", "lean_span.py", "propagation.py", "telemetry.py", "otlp_loop.py",
                    "otlp_encoder.py", "otlp.py", "otlp_transport.py"}
CATEGORIES = ("the disk (write, fsync)", "tracing (spans, trace context, export)", "framing (frames, msgpack)",
              "iroh's bindings (generated glue, fabric/iroh_patch.py)", "event loop (asyncio, uvloop)",
              "the fabric (request path, services)", "the benchmark's own code", "other")
_DISK_CALL = re.compile(r"\bos\.(fsync|fdatasync|write|pwrite)\(")
# A line of any module that starts, ends or changes a span, or injects, extracts or attaches trace
# context: the spans' C part (fabric/_span_core.c) runs inside such a line's frame.
_TRACING_CALL = re.compile(r"start_as_current_span|start_span|\b_span\(|\.set_attribute|\.add_event|\.set_status|"
                           r"record_exception|use_span|propagation\.(inject|extract)|otel_context\.(attach|detach)")
_BINDINGS_MODULE = "/iroh/"  # the generated bindings' package
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")
_THREAD = re.compile(r"^thread \(0?x?[0-9a-fA-F]+\)(?::\s*(?P<name>.*))?$")


@dataclass(frozen=True)
class Frame:
    """One Python frame of a stack."""

    function: str
    file: str
    line: int

    @property
    def label(self) -> str:
        """``function (module path from the package on:line)``, short enough for a table."""
        return f"{self.function} ({short_path(self.file)}:{self.line})"


@dataclass(frozen=True)
class Stack:
    """A distinct stack and how many samples found it: ``frames`` outermost first."""

    thread: str
    frames: tuple[Frame, ...]
    count: int


def short_path(file: str) -> str:
    """A frame's file from its package on: ``opentelemetry/sdk/trace/__init__.py`` for a file in
    ``site-packages``, ``asyncio/events.py`` for the standard library's, ``fabric/streams.py``."""
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in file:
            return file.rsplit(marker, 1)[1]
    if (stdlib := re.search(r"/lib/python3\.\d+/(.*)$", file)) is not None:
        return stdlib.group(1)
    for package in ("fabric", "bench", "pytest_meshfabric"):
        at = file.rfind(f"/{package}/")
        if at >= 0:
            return file[at + 1:]
    return file


def parse(text: str) -> list[Stack]:
    """Every stack of a collapsed-stacks text; a line that is not one raises ``ValueError``
    saying which (a truncated file, or another tool's format)."""
    stacks = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            raise ValueError(f"line {number} is not '<stack> <count>': {line[:120]!r}")
        parts = body.split(";")
        thread = MAIN_THREAD
        if (match := _THREAD.match(parts[0])) is not None:
            thread, parts = (match.group("name") or parts[0]).strip(), parts[1:]
        frames = []
        for part in parts:
            if (frame := _FRAME.match(part)) is None:
                frames.append(Frame(part, "", 0))  # a native frame (py-spy --native) or one without a file
            else:
                frames.append(Frame(frame.group("function"), frame.group("file"), int(frame.group("line"))))
        stacks.append(Stack(thread, tuple(frames), int(count)))
    return stacks


def read(path: Path) -> list[Stack]:
    return parse(path.read_text())


def category(frame: Frame) -> str:
    """The kind of code ``frame`` (a stack's innermost) runs: one of ``CATEGORIES``."""
    file, name = frame.file, Path(frame.file).name
    line = linecache.getline(file, frame.line) if file else ""
    if _DISK_CALL.search(line):
        return CATEGORIES[0]
    if "/opentelemetry/" in file or ("/fabric/" in file and name in _TRACING_MODULES) or _TRACING_CALL.search(line):
        return CATEGORIES[1]
    if "/msgpack/" in file or file.endswith("/fabric/frames.py"):
        return CATEGORIES[2]
    if _BINDINGS_MODULE in file or file.endswith("/fabric/iroh_patch.py"):
        return CATEGORIES[3]
    if "/asyncio/" in file or "/uvloop/" in file or name in {"contextvars.py", "selectors.py", "contextlib.py"}:
        return CATEGORIES[4]
    if "/fabric/" in file:
        return CATEGORIES[5]
    if "/bench/" in file:
        return CATEGORIES[6]
    return CATEGORIES[7]


def thread_group(thread: str) -> str:
    return MAIN_THREAD if thread == MAIN_THREAD else OTHER_THREADS


def by_category(stacks: list[Stack]) -> dict[str, Counter[str]]:
    """Samples by thread group (the event loop's thread, every other) and category."""
    out: dict[str, Counter[str]] = {MAIN_THREAD: Counter(), OTHER_THREADS: Counter()}
    for stack in stacks:
        if stack.frames:
            out[thread_group(stack.thread)][category(stack.frames[-1])] += stack.count
    return out


def top_functions(stacks: list[Stack], n: int = 12, thread: str = MAIN_THREAD) -> list[tuple[str, int]]:
    """The ``n`` innermost frames (function and line) with the most samples on ``thread``'s group."""
    found: Counter[str] = Counter()
    for stack in stacks:
        if stack.frames and thread_group(stack.thread) == thread:
            found[stack.frames[-1].label] += stack.count
    return found.most_common(n)


def bindings_calls(stacks: list[Stack]) -> Counter[str]:
    """The event loop thread's samples in iroh's bindings (``CATEGORIES[3]``), by the bindings'
    call they serve: the outermost frame of the generated module (``SendStream.write_all``,
    ``RecvStream.read``), the same whichever code of ours or of the benchmark's awaited it, so
    a node's calls and the raw echo's line up. A sample with no such frame (a poll's completion
    run by the loop, ``_uniffi_set_future_result``) goes under its innermost frame's function."""
    found: Counter[str] = Counter()
    for stack in stacks:
        if not stack.frames or thread_group(stack.thread) != MAIN_THREAD or category(stack.frames[-1]) != CATEGORIES[3]:
            continue
        generated = next((f for f in stack.frames if _BINDINGS_MODULE in f.file), stack.frames[-1])
        found[generated.function] += stack.count
    return found


def total(stacks: list[Stack], thread: str | None = None) -> int:
    """Samples in all, or on one thread group's threads."""
    return sum(s.count for s in stacks if thread is None or thread_group(s.thread) == thread)
