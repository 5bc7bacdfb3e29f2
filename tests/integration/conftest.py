"""Real node processes for the runtime's integration tests, always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fabric import control
from fabric.launcher import NodeProcess
from pytest_meshfabric.capture import OtlpReceiver
from pytest_meshfabric.waiting import wait_until

__all__ = ["FAST_GOSSIP", "directory_names", "wait_until"]

FAST_GOSSIP = ["--heartbeat", "0.3", "--suspect-after", "1.0", "--remove-after", "2.0"]


def directory_names(node: NodeProcess) -> set[str]:
    reply = control.request_sync(node.control_path, "directory")
    return {e["name"] for e in reply["entries"]}


@pytest.fixture
def spawn(tmp_path: Path, receiver: OtlpReceiver) -> Iterator[Callable[..., NodeProcess]]:
    """``spawn(mesh, type, bootstrap=[...], ...)`` starts a node and waits until it is ready."""
    started: list[NodeProcess] = []
    counter = iter(range(1000))

    def start(mesh: str, type: str, bootstrap: list[str] = (), watch: list[str] = (),
              extra: list[str] = FAST_GOSSIP, data_dir: Path | None = None,
              protocol: str = "http/protobuf") -> NodeProcess:
        node = NodeProcess(mesh, type, data_dir or tmp_path / f"{mesh}-{type}-{next(counter)}",
                           bootstrap, watch, env=receiver.env(protocol, bsp_schedule_delay_ms=100),
                           extra=extra)
        started.append(node)
        node.start().wait_ready(timeout=20)
        return node

    yield start
    for node in started:
        node.stop()
    leftover = [n.pid for n in started if n.alive()]
    assert not leftover, f"node processes survived teardown: {leftover}"
