"""The netns backend: every node in a network namespace of its own, on a bridge.

::

    test process ── mfbr<N> (10.200.N.1/24) ──┬── mf<N>v2 ══ eth0 10.200.N.2  [netns mf-<worker>-<pid>-<N>-2]
                                             └── mf<N>v3 ══ eth0 10.200.N.3  [netns mf-<worker>-<pid>-<N>-3]

Nodes bind ``0.0.0.0:0`` and report their namespace address; the OTLP receiver and test
clients bind the bridge's address, which lives in the test process's namespace. ``N`` (the
subnet, also in every interface name) is unique among the runs sharing a network namespace
(pytest-xdist workers): it is chosen under a lock that is an abstract Unix socket, scoped to
the network namespace like the bridges themselves, so it leaves no file behind.

Every link carries the alias ``meshfabric pid=<pid>`` and every namespace name the pid, so
leftovers of a run that was killed outright (SIGKILL, no teardown) are swept by the next run.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from typing import Any

from fabric.errors import ConfigError, FabricError

from ..waiting import wait_until
from . import NamespacedPlacements, Placement

PREFIX = "10.200"  # subnets 10.200.N.0/24, N in 0..255
FIRST_HOST, LAST_HOST = 2, 254  # .1 is the bridge
_LOCK_NAME = b"\0meshfabric-netns-subnets"
_NAMESPACE = re.compile(r"^mf-(?P<worker>[^-]+)-(?P<pid>\d+)-(?P<net>\d+)-(?P<host>\d+)$")
_ALIAS = re.compile(r"^meshfabric pid=(?P<pid>\d+)$")


class NetnsError(FabricError):
    """An ``ip`` command of the netns backend failed."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; return its stdout, or raise :class:`NetnsError` with its stderr."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _json(*args: str) -> list[dict[str, Any]]:
    out = ip("-j", *args).strip()
    return json.loads(out) if out else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def unavailable_reason() -> str | None:
    """Why per-node namespaces cannot be made here (``None``: they can). Probed once."""
    if os.geteuid() != 0:
        return "the tests do not run as root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"mf-probe-{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except NetnsError as exc:
        return str(exc)
    ip("netns", "del", probe, check=False)
    return None


def sweep_stale() -> list[str]:
    """Remove namespaces and links left by runs whose process is gone; return their names."""
    swept = []
    for ns in _json("netns", "list"):
        match = _NAMESPACE.match(ns.get("name", ""))
        if match and not _alive(int(match["pid"])):
            _kill_inside(ns["name"])
            ip("netns", "del", ns["name"], check=False)
            swept.append(ns["name"])
    for link in _json("link", "show"):
        match = _ALIAS.match(link.get("ifalias", ""))
        if match and not _alive(int(match["pid"])):
            ip("link", "del", link["ifname"], check=False)
            swept.append(link["ifname"])
    return swept


def _kill_inside(namespace: str) -> None:
    """SIGKILL whatever still runs in ``namespace`` (nodes of a run that could not stop them)."""
    for pid in ip("netns", "pids", namespace, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def subnets_in_use(prefix: str) -> set[int]:
    """``N`` of every ``<prefix>.N.x`` address in this network namespace (``prefix``: two octets)."""
    used = set()
    for link in _json("-4", "addr", "show"):
        for addr in link.get("addr_info", []):
            parts = addr.get("local", "").split(".")
            if ".".join(parts[:2]) == prefix:
                used.add(int(parts[2]))
    return used


class HostNumbers:
    """The host numbers ``FIRST_HOST..LAST_HOST`` of one /24 (``.1`` is the host side), each handed out once."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.next = FIRST_HOST

    def take(self) -> int:
        if self.next > LAST_HOST:
            raise ConfigError(f"the {self.backend} backend holds at most {LAST_HOST - FIRST_HOST + 1} nodes per run")
        self.next += 1
        return self.next - 1


def first_free(prefix: str, used: set[int], hint: str = "") -> int:
    """The first ``N`` in 0..255 not in ``used``, counting from this process's pid (spreads runs apart)."""
    start = os.getpid() % 256
    for net in ((start + offset) % 256 for offset in range(256)):
        if net not in used:
            return net
    raise NetnsError(f"every subnet {prefix}.0-255.0/24 is in use{hint}")


class _SubnetLock:
    """Mutual exclusion between runs sharing this network namespace, while a subnet is chosen."""

    def __enter__(self) -> _SubnetLock:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

        def acquired() -> bool:
            try:
                self._sock.bind(_LOCK_NAME)
            except OSError:
                return False
            return True

        wait_until(acquired, 30, "another meshfabric run to finish choosing its subnet")
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


class NetnsBackend(NamespacedPlacements):
    """A bridge and one namespace + veth pair per node; removed by :meth:`close`."""

    name = "netns"
    network_faults = True

    def __init__(self, worker: str = "main") -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise ConfigError(f"the netns backend needs root and iproute2, but {reason}; "
                              "use --fabric-backend local (or auto) instead")
        self.worker = worker.replace("-", "_")
        self._alias = f"meshfabric pid={os.getpid()}"
        super().__init__()
        self._hosts = HostNumbers(self.name)
        sweep_stale()
        with _SubnetLock():
            self.net = self._free_subnet()
            self.bridge = f"mfbr{self.net}"
            self.host = f"{PREFIX}.{self.net}.1"
            try:
                # A fixed MAC: otherwise the bridge takes its ports' lowest MAC, which changes as
                # nodes join, and nodes that cached the old one lose the receiver (and clients).
                ip("link", "add", self.bridge, "address", f"02:6d:66:00:00:{self.net:02x}", "type", "bridge")
                ip("link", "set", self.bridge, "alias", self._alias)
                ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
                ip("link", "set", self.bridge, "up")
            except NetnsError:
                ip("link", "del", self.bridge, check=False)
                raise

    def _free_subnet(self) -> int:
        used_names = {link["ifname"] for link in _json("link", "show")}
        return first_free(PREFIX, subnets_in_use(PREFIX) | {n for n in range(256) if f"mfbr{n}" in used_names},
                          "; remove stale `mfbr*` bridges")

    # -- placements --

    def place(self, label: str) -> Placement:
        host = self._hosts.take()
        # pid + subnet + host: unique on the machine (/run/netns is shared by every network namespace)
        namespace = f"mf-{self.worker}-{os.getpid()}-{self.net}-{host}"
        placement = Placement(label, prefix=["ip", "netns", "exec", namespace], bind="0.0.0.0:0",
                              ip=f"{PREFIX}.{self.net}.{host}", namespace=namespace,
                              host_link=f"mf{self.net}v{host}")
        self._placements[namespace] = placement
        try:
            ip("netns", "add", namespace)
            ip("link", "add", placement.host_link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("link", "set", placement.host_link, "alias", self._alias)
            ip("link", "set", placement.host_link, "master", self.bridge, "up")
            ip("-n", namespace, "addr", "add", f"{placement.ip}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "link", "set", "lo", "up")
        except NetnsError:
            self.release(placement)
            raise
        return placement

    def release(self, placement: Placement) -> None:
        if self._placements.pop(placement.namespace or "", None) is None:
            return
        _kill_inside(placement.namespace or "")
        # The host end first: deleting a namespace frees its veth pair only asynchronously.
        ip("link", "del", placement.host_link or "", check=False)
        ip("netns", "del", placement.namespace or "", check=False)

    def close(self) -> None:
        if not self._release_all():
            return
        ip("link", "del", self.bridge, check=False)

    # -- descriptions --

    def describe(self) -> str:
        return f"netns (a namespace per node on bridge {self.bridge}, {PREFIX}.{self.net}.0/24)"

    def cleanup_commands(self) -> list[str]:
        commands = []
        for p in self._placements.values():
            commands += [f"ip link del {p.host_link}", f"ip netns del {p.namespace}"]
        return commands + [f"ip link del {self.bridge}"]
