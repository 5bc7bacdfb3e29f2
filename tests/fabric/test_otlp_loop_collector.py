"""The event loop's OTLP exporter against a collector that is down, starts late, is busy,
refuses, or closes its kept-alive connection: retries as the SDK's HTTP exporter makes them,
one connection for every post, and no loss but the batch that could not be sent. The status
codes come from a stand-in HTTP server (aiohttp), answering what a real receiver would not."""

from __future__ import annotations

import asyncio
import logging
from typing import Self

import pytest
from aiohttp import web

from pytest_meshfabric.capture import OtlpReceiver
from tests.fabric.otlp_loop_support import (
    attached,
    end_spans,
    free_port,
    spans_named,
    until,
)

pytestmark = pytest.mark.usefixtures("own_encoder")


@pytest.mark.asyncio
async def test_a_collector_that_is_down_loses_that_batch_only(exporting, caplog):
    port = free_port()
    telemetry = exporting(f"http://127.0.0.1:{port}/v1/traces", OTEL_BSP_SCHEDULE_DELAY="60000",
                     OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2", OTEL_EXPORTER_OTLP_TIMEOUT="0.5")
    await attached(telemetry)
    exporter = telemetry.exporter
    with caplog.at_level(logging.WARNING, logger="fabric.otlp_loop"):
        end_spans(telemetry, ["lost1", "lost2"])
        await until(lambda: exporter.failed == 2)  # no time for the next attempt: dropped and logged
    assert "exporting 2 spans" in caplog.text and "dropped" in caplog.text
    with OtlpReceiver(http_port=port) as receiver:  # the collector comes (back) up
        end_spans(telemetry, ["kept1", "kept2"])
        await spans_named(receiver, ["kept1", "kept2"])
        assert not {"lost1", "lost2"} & {s.name for s in receiver.store.all()}
        await until(lambda: exporter.posts == 1)


class StandIn:
    """An HTTP server answering each POST with the next status of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int], keepalive_s: float = 75.0) -> None:
        self.statuses = list(statuses)
        self.keepalive_s = keepalive_s
        self.bodies: list[bytes] = []
        self.connections: set[int] = set()

    async def handle(self, request: web.Request) -> web.Response:
        self.connections.add(id(request.transport))
        self.bodies.append(await request.read())
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, headers={"Retry-After": "0"} if status >= 400 else {})

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        self.runner = web.AppRunner(app, keepalive_timeout=self.keepalive_s)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1/traces"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@pytest.mark.asyncio
async def test_a_collector_that_starts_a_moment_later_gets_the_first_spans(exporting, caplog):
    port = free_port()
    telemetry = exporting(f"http://127.0.0.1:{port}/v1/traces", OTEL_BSP_SCHEDULE_DELAY="60000",
                     OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1")
    await attached(telemetry)
    with caplog.at_level(logging.DEBUG, logger="fabric.otlp_loop"):
        end_spans(telemetry, ["early"])
        await until(lambda: "trying again" in caplog.text)  # refused once, backing off
    with OtlpReceiver(http_port=port) as receiver:  # as the demo's console starts after its brokers
        await spans_named(receiver, ["early"])
    assert telemetry.exporter.failed == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("statuses, posts, failed, requests", [
    ([503, 429], 1, 0, 3),  # busy: tried again (each answer has Retry-After: 0, so no waiting here)
    ([400], 0, 1, 1),  # refused: not tried again
])
async def test_a_busy_collector_is_tried_again_and_a_refusal_is_not(exporting, statuses, posts, failed, requests):
    async with StandIn(statuses) as stand_in:
        telemetry = exporting(stand_in.url, OTEL_BSP_SCHEDULE_DELAY="60000")
        telemetry.attach(asyncio.get_running_loop())
        end_spans(telemetry, ["one"])
        await telemetry.drain()
        assert (telemetry.exporter.posts, telemetry.exporter.failed) == (posts, failed)
        assert len(stand_in.bodies) == requests


@pytest.mark.asyncio
async def test_posts_share_one_connection(exporting):
    async with StandIn([]) as stand_in:
        telemetry = exporting(stand_in.url, OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1")
        telemetry.attach(asyncio.get_running_loop())
        end_spans(telemetry, ["one", "two", "three"])
        await telemetry.drain()
        assert telemetry.exporter.posts == 3
    assert len(stand_in.connections) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("noticed", [True, False])
async def test_a_connection_the_collector_closed_while_idle_is_not_a_failure(exporting, noticed, caplog):
    """Noticed (the loop read the close) or not (the next post finds out): a new connection, at
    once, not a failed attempt and a backoff."""
    caplog.set_level(logging.DEBUG, logger="fabric.otlp_loop")
    async with StandIn([], keepalive_s=0.05) as stand_in:
        telemetry = exporting(stand_in.url, OTEL_BSP_SCHEDULE_DELAY="60000")
        telemetry.attach(asyncio.get_running_loop())
        end_spans(telemetry, ["before"])
        await telemetry.drain()
        reader = telemetry.exporter._poster._streams[0]
        await until(reader.at_eof)  # the collector hung up
        if not noticed:
            reader.at_eof = lambda: False  # as if the close arrived while the post was on its way
        end_spans(telemetry, ["after"])
        await telemetry.drain()
        assert (telemetry.exporter.posts, telemetry.exporter.failed) == (2, 0)
    assert len(stand_in.connections) == 2
    assert "trying again" not in caplog.text
