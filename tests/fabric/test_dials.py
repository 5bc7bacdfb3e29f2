"""Dials shared while young, a fresh one once stale, cancelled when nobody waits (``fabric/dials.py``);
and on real endpoints, a connect after a cut heals does not wait for a dial started during it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import pytest_asyncio

from fabric.dials import STALE_AFTER, Dials
from fabric.errors import PeerTimeout
from fabric.identity import Identity
from fabric.transport import Transport

pytestmark = pytest.mark.asyncio


class Dialling:
    """``start`` for ``Dials.join``: each call is a dial that finishes when the test says."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[str]] = []
        self.cancelled = 0

    async def start(self) -> str:
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_callers_of_a_young_dial_share_it():
    dials, dialling = Dials(stale_after=60), Dialling()
    first = asyncio.ensure_future(dials.join("peer", dialling.start))
    second = asyncio.ensure_future(dials.join("peer", dialling.start))
    await settle()
    assert dials.started == 1 and len(dialling.pending) == 1
    dialling.pending[0].set_result("conn")
    assert await first == await second == "conn"
    assert not dials.in_flight("peer")


async def test_a_caller_after_the_dial_went_stale_starts_a_fresh_one_beside_it():
    dials, dialling = Dials(stale_after=0.0), Dialling()
    stale = asyncio.ensure_future(dials.join("peer", dialling.start))
    await settle()
    fresh = asyncio.ensure_future(dials.join("peer", dialling.start))
    await settle()
    assert dials.started == 2
    dialling.pending[1].set_result("fresh")
    assert await fresh == "fresh" and not stale.done()  # not held up by the stale one
    dialling.pending[0].set_result("stale")
    assert await stale == "stale"


async def test_other_keys_dial_apart():
    dials, dialling = Dials(stale_after=60), Dialling()
    calls = [asyncio.ensure_future(dials.join(key, dialling.start)) for key in ("a", "b")]
    await settle()
    assert dials.started == 2
    for future, value in zip(dialling.pending, ("A", "B"), strict=True):
        future.set_result(value)
    assert await asyncio.gather(*calls) == ["A", "B"]


async def test_the_dial_is_cancelled_only_when_its_last_caller_gives_up():
    dials, dialling = Dials(stale_after=60), Dialling()
    impatient = asyncio.ensure_future(dials.join("peer", dialling.start))
    patient = asyncio.ensure_future(dials.join("peer", dialling.start))
    await settle()
    impatient.cancel()
    await settle()
    assert impatient.cancelled() and dialling.cancelled == 0 and dials.in_flight("peer")
    patient.cancel()
    await settle()
    assert dialling.cancelled == 1 and not dials.in_flight("peer")
    again = asyncio.ensure_future(dials.join("peer", dialling.start))  # a new dial, not the cancelled one
    await settle()
    assert dials.started == 2
    dialling.pending[1].set_result("conn")
    assert await again == "conn"


async def test_a_failed_dial_fails_every_caller_and_the_next_caller_dials_again():
    dials, dialling = Dials(stale_after=60), Dialling()
    calls = [asyncio.ensure_future(dials.join("peer", dialling.start)) for _ in range(2)]
    await settle()
    dialling.pending[0].set_exception(OSError("unreachable"))
    for call in calls:
        with pytest.raises(OSError, match="unreachable"):
            await call
    retry = asyncio.ensure_future(dials.join("peer", dialling.start))
    await settle()
    assert dials.started == 2
    dialling.pending[1].set_result("conn")
    assert await retry == "conn"


# -- real endpoints, a cut path ------------------------------------------------------------

ALPN = b"test/dials/1"


@pytest_asyncio.fixture
async def pair():
    """A server (serving ``ALPN``) and a client endpoint; skipped where no path can be cut."""
    if os.geteuid() != 0 or not (shutil.which("iptables") and shutil.which("ip6tables")):
        pytest.skip("cutting a path needs root, iptables and ip6tables (the tests run in their own network namespace)")
    server, client = await Transport.bind(Identity.generate()), await Transport.bind(Identity.generate())

    async def handler(remote, frame):
        return None

    server.register(ALPN, handler)
    server.apply_alpns()
    server.start_accepting()
    yield server, client
    await client.close()
    await server.close()


def drop_udp_to(addrs: list[str], on: bool) -> None:
    """Drop (or stop dropping) every UDP packet to these ``ip:port`` / ``[ip6]:port`` addresses."""
    for addr in addrs:
        host, _, port = addr.rpartition(":")
        tool = "ip6tables" if host.startswith("[") else "iptables"
        rule = ["INPUT", "-p", "udp", "--dport", port, "-j", "DROP"]
        subprocess.run([tool, "-I" if on else "-D", *rule], check=True, capture_output=True)


@contextlib.contextmanager
def cut_off(server: Transport) -> Iterator[None]:
    """Every packet to ``server`` lost until the block ends (the rules go even if it fails)."""
    drop_udp_to(server.addrs, True)
    try:
        yield
    finally:
        drop_udp_to(server.addrs, False)


async def test_a_connect_after_a_cut_heals_does_not_wait_for_a_dial_started_during_it(pair):
    server, client = pair
    with cut_off(server):
        # Started during the cut: its handshake packet is lost, and QUIC resends it only after
        # a backoff (~1 s with iroh, measured), however soon the cut heals.
        during = asyncio.ensure_future(client.connect(server.node_id, server.addrs, ALPN, timeout=10))
        await asyncio.sleep(STALE_AFTER + 0.05)  # the fault's duration, not a wait for an event
    after = await client.connect(server.node_id, server.addrs, ALPN, timeout=10)
    assert not during.done(), "the dial started during the cut was expected to still wait for its resend"
    assert client._connections[(server.node_id, ALPN)] is after
    assert await during is after  # the stale dial, once through, yields to the connection kept
    assert client.stats["dials_superseded"] == 1


async def test_a_connect_that_times_out_during_a_cut_leaves_no_dial_behind(pair):
    server, client = pair
    with cut_off(server), pytest.raises(PeerTimeout, match="timed out"):
        await client.connect(server.node_id, server.addrs, ALPN, timeout=0.2)
    assert not client._dials.in_flight(((server.node_id, ALPN), frozenset(server.addrs)))  # cancelled with its caller
    assert client.stats["connect_timeouts"] == 1
    assert await client.connect(server.node_id, server.addrs, ALPN, timeout=10) is not None
