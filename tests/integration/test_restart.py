"""A node restarted with the same data dir comes back at the same address and is dialled afresh."""

from __future__ import annotations

import time

import pytest

from fabric import control
from fabric.client import FabricClient
from tests.integration.conftest import directory_names, wait_until

pytestmark = pytest.mark.slow


def entry_in(node, name: str) -> dict | None:
    """``name``'s entry in ``node``'s directory, through its control socket (``None``: absent)."""
    entries = control.request_sync(node.control_path, "directory")["entries"]
    return next((e for e in entries if e["name"] == name), None)


def state_in(node, name: str) -> str:
    entry = entry_in(node, name)
    return entry["state"] if entry else "absent"


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


def incarnation_in(node, name: str) -> int | None:
    entry = entry_in(node, name)
    return entry["incarnation"] if entry else None


def test_a_restarted_seed_rejoins_through_the_peers_it_knew(spawn, receiver):
    """A seed (no --bootstrap) knew nobody after a restart: its peers found it again only
    once they had removed its old process and pulled their bootstrap peer (~2.3-2.8 s here
    with these timings). Now it pulls the peers saved in its data dir with its first pull
    (0.03 s here; the times are in the README, not asserted)."""
    broker = spawn("mesh1", "broker")
    gateway = spawn("mesh1", "gateway", [broker.address])
    peers_file = broker.data_dir / "peers.json"
    wait_until(lambda: peers_file.exists() and gateway.address.split("@")[0] in peers_file.read_text(), 10,
               "the seed to save the gateway as a known peer")
    broker.kill()
    restarted = spawn("mesh1", "broker", data_dir=broker.data_dir)
    current = incarnation_in(restarted, restarted.name)

    def rejoined() -> bool:
        return incarnation_in(gateway, restarted.name) == current and gateway.name in directory_names(restarted)

    wait_until(rejoined, 10, "the gateway and the restarted seed to hold each other")

    def boots(spans):
        found = sorted((s for s in spans if s.name == "gossip_started" and s.service_name == restarted.name),
                       key=lambda s: s.start_ns)
        return found if len(found) == 2 else None

    first, second = receiver.store.wait_for(boots, timeout=15, description="both boots' gossip_started spans")
    assert (first.attributes["gossip.known_peers"], second.attributes["gossip.known_peers"]) == (0, 1)
