"""A node restarted with the same data dir comes back at the same address and is dialled afresh."""

from __future__ import annotations

import time

import pytest

from fabric import control
from fabric.client import FabricClient
from tests.integration.conftest import directory_names, wait_until

pytestmark = pytest.mark.slow


def state_in(node, name: str) -> str:
    entries = control.request_sync(node.control_path, "directory")["entries"]
    return next((e["state"] for e in entries if e["name"] == name), "absent")


@pytest.mark.asyncio
async def test_a_killed_and_restarted_broker_is_produced_to_again_at_once(spawn):
    broker = spawn("mesh1", "broker")
    gateway = spawn("mesh1", "gateway", [broker.address])
    wait_until(lambda: broker.name in directory_names(gateway), 10, "the gateway to see the broker")
    async with await FabricClient.connect(gateway.address) as client:
        assert (await client.produce("t", b"before", to=broker.name))["offset"] == 0
        ipv4 = [a for a in broker.address.split("@")[1].split(",") if a.startswith("127.")]
        broker.kill()
        restarted = spawn("mesh1", "broker", data_dir=broker.data_dir)
        assert ipv4 and ipv4[0] in restarted.address  # same identity, same (IPv4) port
        # The gateway's cached connection to the dead process must not swallow this.
        started = time.monotonic()
        ack = await client.produce("t", b"after", to=restarted.name)
        assert ack["offset"] == 1 and time.monotonic() - started < 4.0

    wait_until(lambda: state_in(restarted, gateway.name) == "alive", 10, "the restarted broker to see the gateway")
    window = time.monotonic() + 3.0  # an invariant over time: no flapping once it is back
    while time.monotonic() < window:
        assert state_in(restarted, gateway.name) == "alive"
        assert state_in(gateway, restarted.name) == "alive"
        time.sleep(0.1)
