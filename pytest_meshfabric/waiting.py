"""Waiting on a condition with a deadline: the harness's only way to synchronise.

Nothing in the harness sleeps for a fixed time hoping something happened; it polls a
condition until it holds or a deadline passes, and then says what it was waiting for and
what it saw last.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from fabric.errors import FabricError

T = TypeVar("T")

#: Seconds between two checks of a polled condition.
POLL_INTERVAL = 0.05


class HarnessTimeout(FabricError, AssertionError):
    """A condition the harness waited for did not hold before its deadline."""


def wait_until(check: Callable[[], T], timeout: float, what: str, *,
               describe: Callable[[Any], str] = repr, interval: float = POLL_INTERVAL) -> T:
    """Return ``check()``'s first truthy value; raise :class:`HarnessTimeout` after ``timeout`` s.

    ``what`` completes "timed out waiting for ..."; ``describe`` renders the last value seen
    (or the last exception ``check`` raised) into the message.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except FabricError as exc:  # e.g. a control socket not there yet: keep trying
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            seen = f"{type(last).__name__}: {last}" if isinstance(last, Exception) else describe(last)
            raise HarnessTimeout(f"timed out after {timeout:g}s waiting for {what}; last seen: {seen}")
        time.sleep(interval)
