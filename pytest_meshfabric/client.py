"""Clients bound to a test cluster: the runtime's async ``FabricClient``, and a blocking wrapper.

A client's spans start the traces a test checks, so it must export to the plugin's receiver:
``connect_client`` sets the standard ``OTEL_*`` variables while the client is created (that
is when it reads them). On the netns backend it binds the bridge address: a socket bound to
127.0.0.1 cannot reach the nodes' namespaces.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from fabric import FabricClient

from .cluster import Cluster

T = TypeVar("T")

__all__ = ["SyncFabricClient", "connect_client"]


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


async def connect_client(cluster: Cluster, via: str | None = None, *, service_name: str | None = None,
                         timeout: float = 5.0) -> FabricClient:
    """A ``FabricClient`` through ``via`` (a node name, ``<mesh>.<type>``; default the cluster's
    entry: mesh1's gateway), exporting its spans to the cluster's receiver."""
    node = cluster.node(via) if via else cluster.entry
    bind = f"{cluster.backend.host}:0"
    with _environment(cluster.node_env):
        return await FabricClient.connect(node.address, service_name=service_name, timeout=timeout, bind=bind)


class SyncFabricClient:
    """A ``FabricClient`` for sync tests: it lives on an event loop in a background thread.

    ``produce``, ``fetch`` and ``resolve`` take the async client's arguments and block until
    the answer (or ``timeout`` seconds).
    """

    def __init__(self, cluster: Cluster, via: str | None = None, *, service_name: str | None = None,
                 timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="meshfabric-client", daemon=True)
        self._thread.start()
        try:
            self.client: FabricClient = self._run(connect_client(cluster, via, service_name=service_name))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def produce(self, topic: str, value: bytes | str, *, to: str | None = None, key: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Produce one record; returns the broker's ack (``topic``, ``offset``, ``broker``, ...)."""
        return self._run(self.client.produce(topic, value, to=to, key=key, headers=headers))

    def fetch(self, topic: str, *, offset: int = 0, max_records: int = 100, from_: str | None = None
              ) -> dict[str, Any]:
        """Records of ``topic`` from ``offset`` on."""
        return self._run(self.client.fetch(topic, offset=offset, max_records=max_records, from_=from_))

    def resolve(self, target: str) -> dict[str, Any]:
        """The via node's directory entry for ``target``."""
        return self._run(self.client.resolve(target))

    def close(self) -> None:
        """Flush the client's spans, close it and stop its loop."""
        try:
            self._run(self.client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SyncFabricClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
