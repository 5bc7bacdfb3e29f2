"""The nemesis's ``latency`` fault: NFQUEUE rules plus a delayer process per namespace.

The kernel here has no ``netem`` and loads no modules, so a delayed link is: in each affected
node's namespace, ``MESHFABRIC_DELAY`` rules sending the link's packets to a queue (see
:func:`.packetfilter.to_queue`), and a :mod:`.delayer` process bound to that queue *in that
namespace*, holding each packet ``ms`` milliseconds. The delayer is started and ready before
the rules go in (a queue without a listener drops packets), and stopped after they are removed.
A delayer that died while its fault lasted is reported when the fault is healed, never hidden.
"""

from __future__ import annotations

import itertools
import selectors
import subprocess
import sys
import time
from pathlib import Path

from fabric.errors import FabricError

from . import delayer
from .packetfilter import Rule, to_queue

DELAYER_SCRIPT = Path(delayer.__file__)
#: NFQUEUE numbers, one per fault, unique in this process (so among all its nemeses).
_QUEUES = itertools.count()
INSTALL_HINT = ("Debian: apt-get install -y libnetfilter-queue-dev build-essential python3-dev, then "
                "pip install 'meshfabric[latency]' (the NetfilterQueue package); .ci/run does it")


class DelayerError(FabricError):
    """A delayer process did not start, or died while its fault lasted."""


class DelayerUnavailable(DelayerError):
    """The delayer cannot bind an NFQUEUE here (no kernel support, no NetfilterQueue)."""


def unavailable_reason() -> str | None:
    """Why packets cannot be delayed here (``None``: they can; the kernel is checked at start)."""
    try:
        import netfilterqueue  # noqa: F401  (the delayer imports it; a broken build fails here too)
    except ImportError as exc:
        return f"the NetfilterQueue Python package cannot be imported ({exc}; {INSTALL_HINT})"
    return None


class Delayer:
    """One ``delayer.py`` process in ``namespace``, delaying NFQUEUE ``queue`` by ``ms``."""

    def __init__(self, namespace: str, queue: int, ms: float) -> None:
        self.namespace, self.queue, self.ms = namespace, queue, ms
        self.process: subprocess.Popen[str] | None = None
        self.stopped = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> Delayer:
        """Start the process and wait (at most ``timeout`` s) until it has bound its queue."""
        cmd = ["ip", "netns", "exec", self.namespace, sys.executable, str(DELAYER_SCRIPT),
               "--queue", str(self.queue), "--ms", f"{self.ms:g}"]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self._first_line(timeout)
        if line != "ready":
            code = self.stop(timeout=2.0)
            message = (f"the delayer for NFQUEUE {self.queue} in namespace {self.namespace} did not start "
                       f"(exit {code}, said {line!r}): {self._stderr()}")
            self.close()
            raise (DelayerUnavailable if code == delayer.EXIT_UNBOUND else DelayerError)(message)
        return self

    def _first_line(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return f"nothing within {timeout:g}s"
        return self.process.stdout.readline().strip()

    def _stderr(self) -> str:
        if self.process is None or self.process.stderr is None or self.process.poll() is None:
            return ""
        return self.process.stderr.read().strip()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout`` s); returns the exit code. Idempotent."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stopped = True
        return self.process.returncode

    def failure(self) -> str | None:
        """Why this delayer ended before it was stopped (``None``: it ran until stopped)."""
        if self.process is None or self.stopped or self.process.poll() is None:
            return None
        return (f"the delayer of NFQUEUE {self.queue} in namespace {self.namespace} died while its "
                f"fault lasted (exit {self.process.returncode}: {self._stderr() or 'no message'}); "
                "its packets were dropped, not delayed")

    def close(self) -> None:
        """Stop the process and close its pipes."""
        self.stop()
        for pipe in (self.process.stdout, self.process.stderr) if self.process else ():
            if pipe is not None:
                pipe.close()


def start_delays(targets: list[tuple[str, str | None]], ms: float,
                 timeout: float = 10.0) -> tuple[list[Rule], list[Delayer]]:
    """Delayers (all ready) and the rules that feed them, for ``targets``: ``(namespace, peer_ip)``
    delays packets from the namespace to that peer; ``(namespace, None)`` every node-to-node
    packet in and out of it. One new queue number per fault."""
    queue = 1000 + next(_QUEUES) % 64000
    delayers: list[Delayer] = []
    rules: list[Rule] = []
    started = time.monotonic()
    try:
        for namespace, peer_ip in targets:
            left = max(1.0, timeout - (time.monotonic() - started))
            delayers.append(Delayer(namespace, queue, ms).start(left))
            if peer_ip is None:
                rules += [to_queue(namespace, queue, "out"), to_queue(namespace, queue, "in")]
            else:
                rules.append(to_queue(namespace, queue, "out", peer_ip))
    except BaseException:
        for started_delayer in delayers:
            started_delayer.close()
        raise
    return rules, delayers
