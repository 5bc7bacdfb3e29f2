"""Start node processes by forking one that has imported a node's code already.

A node process spends ~0.2-0.3 s of CPU before its boot begins: the interpreter's start-up
(``site`` included) and its imports (asyncio, OpenTelemetry, the iroh bindings, the fabric;
another ~0.09 s for a node that exports its spans over OTLP/HTTP). A cluster's nodes, started
together on a small machine, wait on each other's imports. A fork server pays them once:
``ForkServer`` starts a process that imports what a node imports (a console's web app and the
OTLP/HTTP exporter only in servers for the nodes that use them: a child maps its server's
memory, so no node carries what it does not use), then forks one child per ``spawn``. The
child is a process of its own, as a ``python -m fabric node`` would be: its own pid and
session, its stdin, stdout and stderr (passed to the server over a socket), its environment,
working directory and, for the netns backend, network namespace; it runs the same
``meshfabric`` command line, shows it as its own (``ps``, ``/proc/<pid>/cmdline``: one string),
and exits as that would (``atexit`` handlers, flushes).
A 2 x 5 cluster was ready and converged in 1.16 s instead of 2.63 s (``bench.bringup``), and
an idle forked broker holds ~39 MB RSS instead of ~46 (``docs/testing.md``).

The protocol, over a ``SOCK_SEQPACKET`` socket pair (one message each way, so concurrent
spawns from many threads never interleave): a request is a JSON object (``argv``, ``env``,
``cwd``, ``netns``) with four descriptors attached: a status socket, then the child's stdin,
stdout and stderr. On the status socket the server answers ``{"pid": N}`` (or ``{"error":
...}``), and ``{"exit": code}`` once it has reaped the child (a signal's death as ``-signum``,
like ``subprocess``). The server exits when its client closes the control socket (the client
process ended); children it forked live on, reparented, as a daemon's would (whoever started a
node stops it, as before).

``launcher.NodeProcess`` uses it where the child would be the same as a fresh interpreter's:
on Linux, with the launcher's own interpreter settings (no other ``PYTHON*`` variable in the
node's environment), every variable the server's imports read (``MESHFABRIC_SPAN_CORE``, say)
set as the server had it, and no command prefix but ``ip netns exec NS``; else it starts the
node with ``subprocess``, as it always did.
``MESHFABRIC_FORK_SERVER=off`` starts every node with ``subprocess`` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from . import event_loop, otlp_transport, telemetry
from .errors import ConfigError, FabricError
from .forkserver_main import MAX_MESSAGE

ENV = "MESHFABRIC_FORK_SERVER"
# What every node imports (``cli.run_node``). The rest is in a server only for the nodes that use
# it: a child maps every page its server holds, so each module here is in every node's RSS.
NODE_MODULES = ("fabric.cli", "fabric.node", "fabric.node_config", "fabric.event_loop", "fabric.gc_settings")
# What a console imports besides, as it starts (its web app).
CONSOLE_MODULES = ("aiohttp.web", "fabric.services.console.web")
# A node on uvloop (every type but the console, by default) imports it as its loop starts.
UVLOOP_MODULES = ("uvloop",)
# What a node exporting over OTLP/HTTP imports besides (``telemetry.exporter_from_env``; its
# transport imports urllib3 as it is made, its first post the IDNA codec and a thread pool).
EXPORTING_MODULES = ("fabric.otlp_encoder", "fabric.otlp_exporters", "fabric.otlp_transport", "fabric.otlp_loop",
                     "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
                     "opentelemetry.exporter.otlp.proto.common.trace_encoder",
                     "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.http.transport._urllib3", "urllib3", "encodings.idna",
                     "concurrent.futures.thread")
# What it imports besides where the SDK's exporter keeps its ``requests`` session: a collector
# not on plain loopback (the netns backend's receiver is on its bridge), or
# ``MESHFABRIC_OTLP_TRANSPORT=requests``. ``requests`` brings ``charset_normalizer``, which
# imports every codec: ~190 modules a node.
REQUESTS_MODULES = ("requests", "netrc", "shlex")


class ForkServerError(FabricError):
    """The fork server could not start a node, or stopped answering."""


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether nodes start from a fork server: ``MESHFABRIC_FORK_SERVER`` ``auto`` (the
    default: on Linux) or ``on``; ``off`` never. Anything else is a ``ConfigError``."""
    raw = environ.get(ENV, "").strip().lower() or "auto"
    if raw not in ("auto", "on", "off"):
        raise ConfigError(f"{ENV}={raw!r}: expected auto, on or off")
    return raw != "off" and sys.platform == "linux" and hasattr(socket, "send_fds")


def modules_for(env: Mapping[str, str], node_type: str = "broker") -> tuple[str, ...]:
    """What a server should import for a node of ``node_type`` with environment ``env``: the
    console's web app for a console, uvloop for a node that runs on it, the exporter's modules
    if the node will export over OTLP/HTTP; not for other nodes, which would carry them (one
    server per set)."""
    try:
        on_uvloop = event_loop.chosen(env, prefer_uvloop=node_type != "console") == "uvloop"
    except ConfigError:  # the node itself says what is wrong with the variable, and exits
        on_uvloop = False
    exporting = telemetry.export_protocol(env) == "http/protobuf" and telemetry.sdk_enabled(env)
    return (NODE_MODULES + (CONSOLE_MODULES if node_type == "console" else ()) + (UVLOOP_MODULES if on_uvloop else ())
            + (EXPORTING_MODULES if exporting else ()) + (REQUESTS_MODULES if exporting and _via_requests(env) else ()))


def _via_requests(env: Mapping[str, str]) -> bool:
    """Whether an exporting node's HTTP exporter keeps its ``requests`` session (``otlp_transport``)."""
    try:
        return otlp_transport.http_transport_chosen(env) == "requests"
    except ConfigError:  # the node itself says what is wrong with the variable, and exits
        return False


def interpreter_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that shape an interpreter as it starts (``PYTHON*``): a forked child keeps
    its server's, so a node whose environment sets others must start afresh."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


# The server's first lines, run before anything imports the fabric (whose package's imports read
# variables too): every variable read from then until the server is ready is noted, with its
# value (None: unset). A module that reads one as it is imported (MESHFABRIC_SPAN_CORE,
# OpenTelemetry's OTEL_PROPAGATORS, a library's switch for its C part) has taken that value for
# every child. ``get``, ``in`` and ``[]`` on os.environ all go through ``__getitem__``.
_BOOTSTRAP = """\
import os, sys
read = {}
class RecordingEnviron(type(os.environ)):
    def __getitem__(self, key):
        try:
            value = super().__getitem__(key)
        except KeyError:
            read.setdefault(key, None)
            raise
        read.setdefault(key, value)
        return value
environ_class, os.environ.__class__ = type(os.environ), RecordingEnviron
from fabric.forkserver_main import main
sys.exit(main(read, environ_class))
"""


def netns_of(prefix: Sequence[str]) -> tuple[bool, str | None]:
    """``(forkable, namespace)`` for a command prefix: none, or ``ip netns exec NS``."""
    if not prefix:
        return True, None
    if len(prefix) == 4 and list(prefix[:3]) == ["ip", "netns", "exec"]:
        return True, prefix[3]
    return False, None


# -- the client's side ------------------------------------------------------------------------


class ForkedProcess:
    """A child of the fork server, with the part of ``subprocess.Popen`` a launcher uses:
    ``pid``, ``stdout``, ``returncode``, ``poll()`` and ``wait(timeout)``."""

    def __init__(self, pid: int, status: socket.socket) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout: Any = None  # the launcher's end of the child's stdout, once it opens it
        self._status = status
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        return self._wait(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._wait(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"node pid {self.pid}", timeout or 0)
        return code

    def _wait(self, timeout: float | None) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            readable, _, _ = select.select([self._status], [], [], timeout)
            if not readable:
                return None
            message = self._status.recv(MAX_MESSAGE)
            self._status.close()
            if not message:
                raise ForkServerError(f"the fork server ended before node pid {self.pid} did: its exit code is lost")
            self.returncode = int(json.loads(message)["exit"])
            return self.returncode


class ForkServer:
    """A server process holding ``modules``, started by ``start()``; ``spawn`` forks a child."""

    def __init__(self, modules: Sequence[str] = NODE_MODULES, environ: Mapping[str, str] | None = None) -> None:
        self.modules = tuple(modules)
        self.environ = dict(os.environ if environ is None else environ)
        self.settings = interpreter_settings(self.environ)
        self.read_at_import: dict[str, str | None] = {}  # what the server's imports read, and its values
        self._control: socket.socket | None = None
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ForkServer:
        """Start the server; return once it has imported its modules. Its own output goes to an
        unnamed file (not to the caller's stdout and stderr, which a test runner may be capturing
        for one test: the server outlives it); what it said comes with a failure to start."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with tempfile.TemporaryFile() as output:
            with theirs:  # the server's end: closed here, so the server's exit is an end of file
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", _BOOTSTRAP, str(theirs.fileno()), *self.modules],
                    pass_fds=[theirs.fileno()], env=self.environ, stdin=subprocess.DEVNULL, stdout=output,
                    stderr=output, start_new_session=True)
            self._control = ours
            readable, _, _ = select.select([ours], [], [], timeout)
            hello = ours.recv(MAX_MESSAGE) if readable else b""
            if not hello:
                self.close()
                output.seek(0)
                said = output.read()[-2000:].decode(errors="replace").strip()
                raise ForkServerError(f"the fork server did not start within {timeout:g}s"
                                      + (f"; it said:\n{said}" if said else ""))
        self.read_at_import = json.loads(hello)["read"]
        return self

    def can_fork(self, env: Mapping[str, str]) -> bool:
        """Whether a child with ``env`` is what a new interpreter with ``env`` would be: the same
        ``PYTHON*`` settings, and every variable the server's imports read set alike."""
        return interpreter_settings(env) == self.settings and all(
            env.get(name) == value for name, value in self.read_at_import.items())

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], stdout_to: int, stderr_to: int,
              cwd: str | None = None, netns: str | None = None, timeout: float = 10.0) -> ForkedProcess:
        """Fork a child that runs ``meshfabric <argv>`` with ``env``, stdin from /dev/null, stdout
        and stderr to those descriptors (the caller keeps and closes its own)."""
        if self._control is None:
            raise ForkServerError("the fork server is not running")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        request = json.dumps({"argv": list(argv), "env": dict(env), "cwd": cwd or os.getcwd(), "netns": netns})
        stdin = os.open(os.devnull, os.O_RDONLY)
        try:
            socket.send_fds(self._control, [request.encode()], [theirs.fileno(), stdin, stdout_to, stderr_to])
        except OSError as exc:
            mine.close()
            raise ForkServerError(f"the fork server is gone: {exc}") from exc
        finally:
            theirs.close()
            os.close(stdin)
        readable, _, _ = select.select([mine], [], [], timeout)
        reply = json.loads(mine.recv(MAX_MESSAGE) or b'{"error": "the fork server ended"}') if readable \
            else {"error": f"no answer within {timeout:g}s"}
        if "pid" not in reply:
            mine.close()
            raise ForkServerError(f"the fork server could not start the node: {reply['error']}")
        return ForkedProcess(reply["pid"], mine)

    def close(self) -> None:
        """Stop the server (its children live on)."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


_servers: dict[tuple[str, ...], ForkServer] = {}
_starting: dict[tuple[str, ...], threading.Lock] = {}  # one lock per set of modules: servers start side by side
_servers_lock = threading.Lock()  # guards both dicts


def _server(modules: tuple[str, ...]) -> ForkServer:
    """The running server holding ``modules``, started now if there is none (or it ended)."""
    with _servers_lock:
        starting = _starting.setdefault(modules, threading.Lock())
    with starting:
        server = _servers.get(modules)
        if server is None or not server.running:
            server = ForkServer(modules).start()
            with _servers_lock:
                _servers[modules] = server
        return server


def _same_interpreter(env: Mapping[str, str]) -> bool:
    """Whether ``env`` has this process's ``PYTHON*`` settings, which the servers it starts
    keep: if not, no server need be started for it, none could fork its node."""
    return interpreter_settings(env) == interpreter_settings(os.environ)


def server_for(env: Mapping[str, str], node_type: str = "broker") -> ForkServer | None:
    """The running server for a node of ``node_type`` with environment ``env`` (started on first
    use, one per set of modules), or ``None`` if such a node must start afresh (``can_fork``)."""
    if not _same_interpreter(env):
        return None
    server = _server(modules_for(env, node_type))
    return server if server.can_fork(env) else None


def prestart(env: Mapping[str, str], node_types: Sequence[str]) -> list[threading.Thread]:
    """Start, each in a thread of its own, the servers nodes of ``node_types`` with ``env`` will
    be forked from (none where they would not be): a cluster's first nodes then wait for one
    server's start, not for each in turn. A server that fails to start here is tried again, and
    its failure logged, when a node needs it. Returns the threads (daemons)."""
    if not enabled(env) or not _same_interpreter(env):
        return []
    threads = [threading.Thread(target=_start_quietly, args=(modules,), name="meshfabric-forkserver", daemon=True)
               for modules in dict.fromkeys(modules_for(env, node_type) for node_type in node_types)]
    for thread in threads:
        thread.start()
    return threads


def _start_quietly(modules: tuple[str, ...]) -> None:
    with contextlib.suppress(ForkServerError):
        _server(modules)
