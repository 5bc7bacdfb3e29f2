"""The user-space delayer behind the latency fault: its scheduling on a fake clock, then the
real thing (NFQUEUE in a scratch namespace) holding UDP packets for the time asked, in order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pytest_meshfabric.delayer import DelayLine
from pytest_meshfabric.latency import DELAYER_SCRIPT, Delayer, DelayerUnavailable, unavailable_reason


def test_a_delay_line_releases_each_item_after_the_delay_in_arrival_order():
    line: DelayLine[str] = DelayLine(0.05)
    assert line.wait(0.0) is None and line.due(10.0) == []
    line.hold("a", 1.00)
    line.hold("b", 1.01)
    line.hold("c", 1.01)
    assert line.wait(1.02) == pytest.approx(0.03)
    assert line.due(1.0499) == []
    assert line.due(1.05) == ["a"]
    assert line.due(2.0) == ["b", "c"] and len(line) == 0
    line.hold("d", 3.0)
    assert line.wait(9.0) == 0.0  # overdue: release now, never a negative timeout
    assert line.drain() == ["d"] and line.wait(9.0) is None


def test_a_negative_delay_is_refused():
    with pytest.raises(ValueError, match="delay must be >= 0"):
        DelayLine(-0.001)


def test_bad_arguments_exit_2():
    done = subprocess.run([sys.executable, str(DELAYER_SCRIPT), "--queue", "70000", "--ms", "5"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--queue must be 0-65535" in done.stderr


# Inside the scratch namespace: echo UDP on 127.0.0.1, send a burst of numbered datagrams, and
# report each one's round trip and the order the echoes came back in.
ECHO = """
import json, socket, threading, time
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); srv.bind(("127.0.0.1", 9999))
def echo():
    while True:
        data, peer = srv.recvfrom(64); srv.sendto(data, peer)
threading.Thread(target=echo, daemon=True).start()
cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); cli.settimeout(5)
sent = {}
for i in range(40):
    sent[i] = time.monotonic(); cli.sendto(str(i).encode(), ("127.0.0.1", 9999))
order, rtts = [], []
for _ in range(40):
    data, _ = cli.recvfrom(64); i = int(data); order.append(i); rtts.append(time.monotonic() - sent[i])
print(json.dumps({"order": order, "rtts": rtts}))
"""


@pytest.fixture
def scratch_namespace():
    """A loopback-only namespace of our own, removed afterwards (with its rules and processes)."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        pytest.skip("the real delayer needs root, iproute2 and iptables")
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    name = f"mfdelay-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_the_delayer_holds_every_packet_for_the_time_asked_and_keeps_their_order(scratch_namespace):
    ms = 30
    subprocess.run(["ip", "netns", "exec", scratch_namespace, "iptables", "-w", "-A", "OUTPUT", "-o", "lo", "-p",
                    "udp", "--dport", "9999", "-j", "NFQUEUE", "--queue-num", "7"], check=True)
    delayer = Delayer(scratch_namespace, 7, ms).start()
    try:
        with pytest.raises(DelayerUnavailable, match="cannot bind NFQUEUE 7"):
            Delayer(scratch_namespace, 7, ms).start()  # a queue has one listener
        done = subprocess.run(["ip", "netns", "exec", scratch_namespace, sys.executable, "-c", ECHO],
                              capture_output=True, text=True, timeout=30, check=True)
        result = json.loads(done.stdout)
        assert result["order"] == list(range(40))
        rtts = sorted(result["rtts"])
        assert rtts[0] >= ms / 1000, rtts  # only the requests are queued: each round trip gains ms
        assert rtts[len(rtts) // 2] < (ms + 20) / 1000, rtts
        assert delayer.running and delayer.failure() is None
    finally:
        assert delayer.stop() == 0  # SIGTERM: held packets released, clean exit
        delayer.close()
    assert not delayer.running
