"""What the tests of the event loop's OTLP exporter (``fabric/otlp_loop.py``) share: a gateway's
labels, the batching variables they clear, and waits that let the export task run."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

from fabric.identity import Identity, node_name
from fabric.otlp_loop import EXPORT_ENV
from fabric.telemetry import NodeLabels, Telemetry
from pytest_meshfabric.capture import OtlpReceiver

NODE_ID = Identity.generate().node_id
LABELS = NodeLabels(node_name("mesh1", "gateway", NODE_ID), "mesh1", "gateway", NODE_ID)
BATCHING = ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", EXPORT_ENV)


def traces_url(rx: OtlpReceiver) -> str:
    return f"{rx.http_endpoint}/v1/traces"


def end_spans(telemetry: Telemetry, names: list[str]) -> None:
    for name in names:
        with telemetry.tracer.start_as_current_span(name):
            pass


async def spans_named(rx: OtlpReceiver, names: list[str], timeout: float = 10.0) -> None:
    wanted = set(names)
    await rx.store.await_for(lambda spans: wanted <= {s.name for s in spans}, timeout=timeout,
                             description=f"spans {sorted(wanted)}")


async def attached(telemetry: Telemetry) -> None:
    """Give ``telemetry`` this loop and let its export task reach its wait (one loop turn), so
    spans ended next find it waiting, as in a running node."""
    telemetry.attach(asyncio.get_running_loop())
    await asyncio.sleep(0)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (on the loop, so the export task runs) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def sdk_export_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("OtelBatch")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
