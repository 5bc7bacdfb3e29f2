"""The event loop a node process runs on: uvloop where it is installed, else asyncio's own.

A produce is a chain of loop turns and wake-ups in two processes (a reply read, a task
resumed, a handler started, a group commit's turn), and every await into the iroh bindings
ends with the runtime's thread waking the loop (``call_soon_threadsafe``). uvloop does both
in C (libuv): interleaved ``bench.produce`` runs put the gateway writer's cross-mesh p50 at
0.90 / 0.86 ms against asyncio's 0.95 / 0.95 ms, unbatched throughput 5,600 against
4,900-5,300 records/s, and the raw iroh round trip (the floor) 0.40 against 0.43 ms.

``MESHFABRIC_EVENT_LOOP`` picks it: ``uvloop`` (must be installed), ``asyncio``, or unset /
``auto``: uvloop if importable, except for the console node, which keeps asyncio's loop. The
console serves a web page to a few people and is on no record's path; uvloop would add ~1.2 MB
to the node that is already the largest (~56.7 MB idle in a 5-node mesh, against a 60 MB
budget; the others ~47 MB on uvloop). ``asyncio`` is also the way to debug a node on the
standard loop and its debug mode (``PYTHONASYNCIODEBUG=1``). The benchmarks run their own
side (the raw echo, the boot bench's nodes) on the nodes' loop, so ratios compare like with
like.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from .errors import ConfigError

ENV = "MESHFABRIC_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def _uvloop_installed() -> bool:
    """Whether uvloop can be imported, without importing it (~1.2 MB that a process keeping
    asyncio's loop would pay for nothing)."""
    return importlib.util.find_spec("uvloop") is not None


def chosen(environ: Mapping[str, str] = os.environ, prefer_uvloop: bool = True) -> str:
    """The loop ``run`` uses: ``"uvloop"`` or ``"asyncio"``; ``prefer_uvloop`` is what ``auto``
    means where uvloop is installed. A bad value, or ``uvloop`` asked for and not installed,
    is a ``ConfigError`` naming the variable."""
    raw = environ.get(ENV, "").strip().lower() or "auto"
    if raw not in CHOICES:
        raise ConfigError(f"{ENV}={raw!r}: expected one of {', '.join(CHOICES)}")
    available = _uvloop_installed()
    if raw == "uvloop" and not available:
        raise ConfigError(f"{ENV}=uvloop but uvloop is not installed (pip install uvloop), "
                          f"or set {ENV}=asyncio")
    if raw == "uvloop" or (raw == "auto" and available and prefer_uvloop):
        return "uvloop"
    return "asyncio"


def run(main: Coroutine[Any, Any, T], environ: Mapping[str, str] = os.environ,
        prefer_uvloop: bool = True) -> T:
    """``asyncio.run(main)`` on the chosen loop (see ``chosen``)."""
    try:
        which = chosen(environ, prefer_uvloop)
    except ConfigError:
        main.close()  # never awaited: say so quietly, not with a RuntimeWarning
        raise
    if which == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def current() -> str:
    """The running loop's kind (for ``status``): ``"uvloop"`` or ``"asyncio"``."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
