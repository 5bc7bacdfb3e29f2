"""The nemesis's latency fault on real clusters: round trips slow down by what was asked, heal
removes the NFQUEUE rules and the delayer processes, and what cannot be done is skipped."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from pytest_meshfabric import wait_until
from pytest_meshfabric.latency import DelayerError

pytestmark = pytest.mark.fabric(meshes=2)  # the cluster spec of test_nemesis.py: one shared cluster

MS = 100  # one-way delay asked for; a round trip across the delayed link takes 2 * MS more


def needs_latency(fabric) -> None:
    if not fabric.backend.network_faults:
        pytest.skip("network faults need the netns backend (root)")


def delay_rules(node) -> list[str]:
    """The MESHFABRIC_DELAY chain's rules in the node's namespace."""
    done = subprocess.run(["ip", "netns", "exec", node.namespace, "iptables", "-w", "-S", "MESHFABRIC_DELAY"],
                          capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line.startswith("-A")]


def produce_round_trip(client, broker, n: int = 5) -> float:
    """Median seconds of ``n`` produces through mesh1's gateway to ``broker`` (one gateway->broker
    round trip each, plus the broker's fsync and the client's own undelayed hop)."""
    times = []
    for i in range(n):
        started = time.perf_counter()
        ack = client.produce("latency", f"r{i}", to=broker.name)
        times.append(time.perf_counter() - started)
        assert ack["broker"] == broker.name
    return statistics.median(times)


def exited(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.mark.parametrize("on", ["link", "node"])
def test_latency_delays_round_trips_by_what_was_asked_and_heal_undoes_it(fabric, nemesis, fabric_client_sync,
                                                                          spans, on):
    needs_latency(fabric)
    gateway, broker = fabric["mesh1"]["gateway"], fabric["mesh1"]["broker"]
    before = produce_round_trip(fabric_client_sync, broker)

    event = nemesis.latency((gateway, broker) if on == "link" else broker, MS)
    pids = [d.pid for d in event.delayers]
    assert len(pids) == (2 if on == "link" else 1) and all(d.running for d in event.delayers)
    queue = event.delayers[0].queue
    if on == "link":
        assert delay_rules(gateway) == [f"-A MESHFABRIC_DELAY -d {broker.ip}/32 -o eth0 -j NFQUEUE --queue-num {queue}"]
        assert delay_rules(broker) == [f"-A MESHFABRIC_DELAY -d {gateway.ip}/32 -o eth0 -j NFQUEUE --queue-num {queue}"]
    else:
        assert delay_rules(broker) == [f"-A MESHFABRIC_DELAY -o eth0 -j NFQUEUE --queue-num {queue}",
                                       f"-A MESHFABRIC_DELAY -i eth0 -j NFQUEUE --queue-num {queue}"]
    during = produce_round_trip(fabric_client_sync, broker)
    assert during - before >= 0.8 * 2 * MS / 1000, (before, during)

    nemesis.heal_event(event)
    assert delay_rules(gateway) == [] and delay_rules(broker) == []
    assert all(exited(pid) for pid in pids)
    # Back to normal (QUIC's RTT estimate and a loaded 2-core machine may take a moment).
    after = wait_until(lambda: (rtt := produce_round_trip(fabric_client_sync, broker)) - before < 0.5 * MS / 1000
                       and rtt, 10, "round trips back to their speed before the fault")
    span = spans.wait_for_span(name="nemesis.latency", service="nemesis")
    assert set(span.attributes["nemesis.nodes"]) == {n.name for n in ([gateway, broker] if on == "link" else [broker])}
    print(f"latency {on}: asked {2 * MS} ms per round trip; produce p50 before {before * 1000:.1f} ms, "
          f"during {during * 1000:.1f} ms (+{(during - before) * 1000:.1f}), after {after * 1000:.1f} ms")


def test_drops_come_before_the_delay_whatever_the_order_of_the_faults(fabric, nemesis):
    needs_latency(fabric)
    broker = fabric["mesh1"]["broker"]
    others = [n for n in fabric.nodes if n is not broker]
    nemesis.latency(broker, MS)  # every packet into the broker is queued...
    nemesis.partition_one_way(others, broker)  # ...yet these drops, applied later, still apply
    jumps = subprocess.run(["ip", "netns", "exec", broker.namespace, "iptables", "-w", "-S", "INPUT"],
                           capture_output=True, text=True, check=True).stdout
    assert [line.split("-j ")[1] for line in jumps.splitlines() if "-j MESHFABRIC" in line][:2] == [
        "MESHFABRIC", "MESHFABRIC_DELAY"]
    wait_until(lambda: broker.directory_names() == {broker.name}, 10, "the deaf broker to drop every peer",
               describe=lambda _: str(broker.directory_names()))
    nemesis.heal()
    fabric.wait_converged()


def test_a_delayer_that_dies_is_reported_at_heal_never_hidden(fabric, nemesis):
    needs_latency(fabric)
    event = nemesis.latency(fabric["mesh2"]["registry"], 20)
    victim = event.delayers[0]
    os.kill(victim.pid, signal.SIGKILL)
    wait_until(lambda: not victim.running, 5, "the killed delayer to exit")
    with pytest.raises(DelayerError, match="died while its fault lasted .exit -9"):
        nemesis.heal()
    assert delay_rules(fabric["mesh2"]["registry"]) == []
    fabric.wait_converged()


def test_latency_without_netfilterqueue_is_skipped_with_how_to_install(fabric, nemesis, monkeypatch):
    needs_latency(fabric)
    monkeypatch.setitem(sys.modules, "netfilterqueue", None)  # what a machine without the package sees
    with pytest.raises(pytest.skip.Exception, match="latency is unavailable.*libnetfilter-queue-dev"):
        nemesis.latency((fabric["mesh1"]["broker"], fabric["mesh2"]["broker"]), 50)
    assert nemesis.events == []
