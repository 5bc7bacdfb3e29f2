"""Where node processes run: a backend hands out *placements* and cleans them up.

A :class:`Placement` is everything needed to start one node somewhere: a command prefix
(e.g. ``ip netns exec NS``), the address the node binds, and the address it will be reached
at. Backends:

* ``local``  every node on 127.0.0.1 of the test's own network namespace.
* ``netns``  every node in a network namespace of its own, on a bridge (root + iproute2);
  real links between nodes, so network faults can be injected.
* ``docker`` every node in a container of its own on a Docker network (a private ``dockerd``
  in the tests' network namespace, or ``DOCKER_HOST``); the same network faults.

A new backend implements :class:`Backend` and registers in :data:`BACKENDS`; a placement's
``process_factory`` may run the node as something other than a plain process (docker: a container).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from fabric.errors import ConfigError
from fabric.launcher import NodeProcess

#: Faults that need nodes on separate links (the chaos harness checks ``network_faults``).
NETWORK_FAULTS = ("partition", "isolate", "loss", "latency")


@dataclass
class Placement:
    """One node's place: how to start it and where it is."""

    label: str
    prefix: list[str] = field(default_factory=list)
    bind: str = "127.0.0.1:0"
    ip: str = "127.0.0.1"
    namespace: str | None = None
    host_link: str | None = None
    #: What runs the node: ``NodeProcess``, or a backend's subclass (docker: a container).
    process_factory: Callable[..., NodeProcess] | None = None

    def reach_hint(self) -> str:
        """How a person reaches this place from a shell (for --fabric-keep notices)."""
        return f"ip netns exec {self.namespace} <command>" if self.namespace else "on this host's loopback"


class NamespacedPlacements:
    """What the netns and docker backends share: the placements they handed out, by network
    namespace, and whether ``--fabric-keep`` asked to leave everything in place."""

    def __init__(self) -> None:
        self._placements: dict[str, Placement] = {}
        self._kept = False

    def keep(self) -> None:
        self._kept = True

    def _release_all(self) -> bool:
        """Release every placement (with the backend's own ``release``), for ``close``;
        ``False`` (nothing released) when kept."""
        if self._kept:
            return False
        for placement in list(self._placements.values()):
            self.release(placement)  # type: ignore[attr-defined]
        return True


class Backend(Protocol):
    """What the cluster needs from a backend."""

    name: str
    #: The test process's address as nodes see it: the OTLP receiver and clients bind here.
    host: str
    #: True when nodes sit on separate links, so partitions and packet loss are possible.
    network_faults: bool

    def place(self, label: str) -> Placement:
        """A fresh place for one node; released by :meth:`release` or :meth:`close`."""
        ...

    def release(self, placement: Placement) -> None:
        """Remove what :meth:`place` created (the node must have exited)."""
        ...

    def keep(self) -> None:
        """Leave everything in place when closed (``--fabric-keep`` after a failure)."""
        ...

    def close(self) -> None:
        """Remove everything this backend created, unless :meth:`keep` was called."""
        ...

    def describe(self) -> str:
        """One line for the pytest header and error messages."""
        ...

    def cleanup_commands(self) -> list[str]:
        """Shell commands that remove what this backend created (for kept clusters)."""
        ...


def _local(worker: str) -> Backend:
    from .local import LocalBackend
    return LocalBackend()


def _netns(worker: str) -> Backend:
    from .netns import NetnsBackend
    return NetnsBackend(worker)


def _docker(worker: str) -> Backend:
    from .docker import DockerBackend
    return DockerBackend(worker)


#: Backend name → constructor taking the pytest-xdist worker id (``gw0``, or ``main``).
BACKENDS: dict[str, Callable[[str], Backend]] = {"local": _local, "netns": _netns, "docker": _docker}
CHOICES = ("auto", *BACKENDS)


def netns_unavailable_reason() -> str | None:
    """Why the netns backend cannot run here, or ``None`` when it can."""
    from .netns import unavailable_reason
    return unavailable_reason()


def resolve_backend_name(requested: str) -> tuple[str, str | None]:
    """``(backend name, notice)`` for a ``--fabric-backend`` value; ``auto`` picks netns when possible."""
    if requested not in CHOICES:
        raise ConfigError(f"unknown fabric backend {requested!r}; choose one of {', '.join(CHOICES)}")
    if requested != "auto":
        return requested, None
    reason = netns_unavailable_reason()
    if reason is None:
        return "netns", None
    notice = (f"meshfabric: nodes run on 127.0.0.1 (local backend) because {reason}; unavailable faults: "
              f"{', '.join(NETWORK_FAULTS)} (they need a network namespace per node: run as root with iproute2)")
    return "local", notice


def open_backend(name: str, worker: str = "main") -> Backend:
    """Create the backend ``name`` (``local``, ``netns`` or ``docker``; ``auto`` is resolved before)."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown fabric backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    return factory(worker)
