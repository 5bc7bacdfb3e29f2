"""The garbage collector's thresholds for a node process.

CPython collects its youngest generation whenever tracked allocations outnumber deallocations
by 700. A node under load keeps ~20 objects alive per request in flight, so with 32 requests
in flight that count is reached every ~25 records: ~1,400 young, ~130 middle and ~12 full
collections per 36,000 records, 0.2-0.5 s in all, 5-12 µs a record (``gc.callbacks`` in a
gateway and a broker, ``bench``-style load). Every full collection walks every object the
process holds, the ring of recent spans included, so recording spans made it dearer: that
was about half of what tracing cost in throughput.

Almost everything on a node's hot path dies by reference counting; cycles are rare (a failed
stream's exception and its frames). Measured the same way: a young threshold of 2,000 left
58-186 collections, 5,000 left 14-74 (0.04-0.08 s) and 10,000 left 6-36, with the same CPU
per record and throughput for 5,000 and 10,000. 5,000 it is: the price is garbage in cycles
waiting for up to ~5,000 net allocations instead of 700 before it is found, so a burst of
failures holding large records keeps their memory a little longer. Set for node processes
only (``meshfabric node``): a program that embeds a ``Node`` keeps its own settings.
"""

from __future__ import annotations

import gc
import os
from typing import Mapping

from .errors import ConfigError

ENV = "MESHFABRIC_GC_THRESHOLD"
NODE_THRESHOLDS = (5_000, 10, 10)


def thresholds_from(environ: Mapping[str, str] = os.environ) -> tuple[int, ...] | None:
    """The thresholds to use: ``MESHFABRIC_GC_THRESHOLD`` (``"a"``, ``"a,b"`` or ``"a,b,c"``,
    as for ``gc.set_threshold``; ``"default"`` keeps CPython's), else the node's."""
    raw = environ.get(ENV, "").strip()
    if not raw:
        return NODE_THRESHOLDS
    if raw == "default":
        return None
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        values = ()
    if not 1 <= len(values) <= 3 or any(v < 0 for v in values):
        raise ConfigError(f"{ENV}={raw!r}: expected 1-3 comma-separated integers >= 0 "
                          f"(as for gc.set_threshold, e.g. '5000,10,10'), or 'default'")
    return values


def configure_for_node(environ: Mapping[str, str] = os.environ) -> tuple[int, int, int]:
    """Apply the node's thresholds (or the variable's); return the thresholds in force."""
    values = thresholds_from(environ)
    if values is not None:
        gc.set_threshold(*values)
    return gc.get_threshold()
