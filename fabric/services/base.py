"""What every service of a node looks like."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..frames import Frame
from ..rpc import Operation, Router

if TYPE_CHECKING:
    from ..node import Node


class Service:
    """One protocol a node serves: an ALPN, named operations, digest metadata.

    Subclasses set ``alpn`` and return their operations from ``operations()``; they may
    publish metadata in the node's gossip digest (``meta``) and run background work between
    ``start`` and ``stop``.
    """

    alpn: bytes = b""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.router = Router(self.operations())

    def operations(self) -> dict[str, Operation]:
        return {}

    async def handle(self, remote: str, frame: Frame) -> Frame:
        return await self.router(remote, frame)

    def meta(self) -> dict[str, Any]:
        """Metadata to gossip in the node's digest (kept small: it travels every heartbeat)."""
        return {}

    def ready_info(self) -> dict[str, Any]:
        """Extra fields for the node's ready line and ``status`` (e.g. the console's URL)."""
        return {}

    def control_operations(self) -> dict[str, Any]:
        """Extra operations on the node's control socket."""
        return {}

    async def start(self) -> None:
        """Called once the node is ready."""

    async def stop(self) -> None:
        """Stop background work; called before the node leaves and closes its endpoint."""

    def close(self) -> None:
        """Release files and the like; called after the endpoint is closed."""
