"""The fork server's own process (``fabric/forkserver.py`` starts it and speaks to it).

It imports what its nodes import, then waits on its control socket: for each request it forks a
child, which becomes the node (``_run_child``), and it reports each child's exit once it has
reaped it. It ends when its client closes the control socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

MAX_MESSAGE = 1 << 20  # the largest message either side reads: a request, a node's argv and environment
CLONE_NEWNET = 0x40000000


def main(read: dict[str, str | None], environ_class: type) -> int:
    """The server (``_BOOTSTRAP``, with the control socket's descriptor and the modules to import
    as arguments): import, serve until the client goes, or, in a forked child, run the node and
    return its exit code. ``read``: the variables read so far, which the imports add to, until
    ``os.environ`` is an ``environ_class`` again."""
    control = socket.socket(fileno=int(sys.argv[1]))
    try:
        for name in [*sys.argv[2:], "setproctitle"]:
            try:
                importlib.import_module(name)
            except ImportError:  # an optional part (the exporter's): the child imports it or does without
                pass
    finally:
        os.environ.__class__ = environ_class
    _retitle([sys.executable, "-m", "fabric.forkserver", "(meshfabric's fork server)"])
    gc.collect()
    gc.freeze()  # what the imports made stays put: the collector never writes to those pages
    control.send(json.dumps({"read": read}).encode())  # ready
    request = _serve(control)
    return 0 if request is None else _run_child(*request)


def _serve(control: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """Fork a child per request; report each child's exit. Returns in a child (its request and
    descriptors), or ``None`` once the client has closed the control socket."""
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, socket.socket] = {}
    try:
        while True:
            readable, _, _ = select.select([control, wake_r], [], [])
            if wake_r in readable:
                while True:
                    try:
                        wake_r.recv(4096)
                    except BlockingIOError:
                        break
                _reap(children)
            if control not in readable:
                continue
            message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 4)
            if not message:
                return None
            if len(fds) != 4:  # not a request of ours: nowhere to answer
                for fd in fds:
                    os.close(fd)
                continue
            status, stdio = socket.socket(fileno=fds[0]), fds[1:]
            try:
                request = json.loads(message)
                pid = os.fork()
            except Exception as exc:  # noqa: BLE001 - a bad request or no fork: say so, serve the next
                _tell(status, {"error": f"{type(exc).__name__}: {exc}"})
                status.close()
                for fd in stdio:
                    os.close(fd)
                continue
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for sock in (control, wake_r, wake_w, status, *children.values()):
                    sock.close()
                return request, stdio
            for fd in stdio:
                os.close(fd)
            children[pid] = status
            _tell(status, {"pid": pid})
    finally:  # the server leaving, or a child that has closed them already (a no-op then)
        for sock in children.values():
            sock.close()


def _reap(children: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status = children.pop(pid, None)
        if status is not None:
            _tell(status, {"exit": os.waitstatus_to_exitcode(wait_status)})
            status.close()


def _tell(status: socket.socket, message: dict[str, Any]) -> None:
    """Send ``message`` on a child's status socket; a client that stopped listening is no error."""
    with contextlib.suppress(OSError):
        status.send(json.dumps(message).encode())


def _run_child(request: dict[str, Any], stdio: list[int]) -> int:
    """In the forked child: become the node process ``python -m fabric <argv>`` would be."""
    os.setsid()
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    try:
        if request.get("netns"):
            enter_netns(request["netns"])
        os.chdir(request["cwd"])
    except OSError as exc:
        print(f"meshfabric: cannot start the node: {exc}", file=sys.stderr, flush=True)
        return 1
    os.environ.clear()
    os.environ.update(request["env"])
    from . import cli

    sys.argv = [str(Path(cli.__file__).with_name("__main__.py")), *request["argv"]]
    _retitle([sys.executable, "-m", "fabric", *request["argv"]])
    return cli.main(list(request["argv"]))


def _retitle(argv: list[str]) -> None:
    """Show ``argv`` as this process's command line (``ps``, ``/proc/<pid>/cmdline``, one string):
    a fork keeps its server's, which names no node. Without ``setproctitle`` it stays."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(subprocess.list2cmdline(argv))


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into the network namespace ``ip netns`` calls ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if hasattr(os, "setns"):  # Python 3.12
            os.setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into network namespace {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)
