"""The ``fabric_factory`` fixture's object: extra clusters and single nodes, stopped when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .cluster import Cluster, ClusterSpec
from .nodes import NodeHandle
from .session import FabricSession


class FabricFactory:
    """Starts clusters (``fabric_factory(meshes=2)``) and nodes (``fabric_factory.node("mesh1", "broker")``)."""

    def __init__(self, session: FabricSession, involve: Callable[[Cluster], None]) -> None:
        self._session = session
        self._involve = involve
        self._clusters: list[Cluster] = []
        self._joined: list[tuple[Cluster, NodeHandle]] = []
        self._loose: Cluster | None = None

    def __call__(self, meshes: int = 1, types: Sequence[str] | None = None,
                 node_args: Sequence[str] | None = None, cross_mesh: str = "watch") -> Cluster:
        """Start a cluster of ``meshes`` meshes with one node per type (default: the session's
        ``--fabric-types``) and wait until it is ready; ``cross_mesh="backbone"``: gateways and
        consoles see other meshes only through the backbone."""
        settings = self._session.settings
        spec = ClusterSpec(meshes=meshes, types=tuple(types or settings.types),
                           node_args=tuple(settings.node_args if node_args is None else node_args),
                           cross_mesh=cross_mesh)
        cluster = self._session.start_cluster(spec)
        self._clusters.append(cluster)
        self._involve(cluster)
        return cluster

    def node(self, mesh: str, type: str, *, join: Cluster | None = None, watch: Sequence[str] | None = None,
             args: Sequence[str] = ()) -> NodeHandle:
        """Start one node and wait until it is ready and its boot trace is in.

        With ``join`` it joins that cluster (any cluster, the session's ``fabric`` too) and is
        removed from it at the end of the test; without, it joins the other loose nodes this
        test started. A gateway or console watches every other mesh unless ``watch`` says.
        """
        if join is None:
            if self._loose is None:
                self._loose = self._session.new_cluster(ClusterSpec(node_args=self._session.settings.node_args))
                self._clusters.append(self._loose)
                self._involve(self._loose)
            return self._loose.add_node(mesh, type, watch=None if watch is None else tuple(watch), args=tuple(args))
        node = join.add_node(mesh, type, watch=None if watch is None else tuple(watch), args=tuple(args))
        self._joined.append((join, node))
        self._involve(join)
        return node

    def close(self) -> None:
        """Stop what this factory started (kept clusters excepted)."""
        for cluster, node in reversed(self._joined):
            if not cluster.kept:
                cluster.remove_node(node)
        for cluster in {id(c): c for c, _ in self._joined if not c.kept}.values():
            cluster.wait_converged()  # the next test sees the cluster as it was
        for cluster in reversed(self._clusters):
            self._session.stop_cluster(cluster)
