"""The local backend: every node on 127.0.0.1 of the test's own network namespace."""

from __future__ import annotations

from . import Placement


class LocalBackend:
    """Nodes share the host's loopback: cheap, but links between nodes cannot be cut."""

    name = "local"
    host = "127.0.0.1"
    network_faults = False

    def place(self, label: str) -> Placement:
        return Placement(label)

    def release(self, placement: Placement) -> None:
        """Nothing to remove: the node's process and data dir belong to the cluster."""

    def keep(self) -> None:
        """Nothing to keep."""

    def close(self) -> None:
        """Nothing to remove."""

    def describe(self) -> str:
        return "local (every node on 127.0.0.1)"

    def cleanup_commands(self) -> list[str]:
        return []
