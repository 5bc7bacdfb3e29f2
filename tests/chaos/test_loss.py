"""Failure detection under packet loss, on the real network with the default gossip timings:
10% of the packets on every link lost for a while removes no live node, and a node that dies
under that loss is still removed in time (issue 8's target)."""

from __future__ import annotations

import itertools
import time

import pytest

from pytest_meshfabric import wait_until
from pytest_meshfabric.spanstore import SpanWaitTimeout

# node_args=[]: the node's own defaults (heartbeat 0.5 s, suspect after 1.5 s, removed after 2.5 s),
# not the harness' faster ones
pytestmark = pytest.mark.fabric(meshes=1, types=["broker", "gateway", "registry", "compute"], node_args=[])

LOSS = 0.10
HOLD_S = 20.0  # the fault's duration: 40 heartbeats of every node through lossy links
DEFAULT_REMOVE_AFTER_S = 2.5


def test_ten_percent_loss_on_every_link_removes_no_live_node(fabric, nemesis, spans):
    if not fabric.backend.network_faults:
        pytest.skip("packet loss needs the netns backend (root)")
    nodes = fabric.nodes
    for a, b in itertools.combinations(nodes, 2):
        nemesis.loss((a, b), LOSS)  # each direction of each link: 10% of its packets dropped
    start_ns = time.time_ns()

    def removals(found: list) -> list:
        return [s for s in found if s.name == "directory.removed" and s.start_ns >= start_ns]

    with pytest.raises(SpanWaitTimeout):  # the fault holds HOLD_S; any removal ends the wait early
        wrongly = spans.wait_for(removals, timeout=HOLD_S, description="a node removed under loss")
        pytest.fail(f"live nodes removed under {LOSS:.0%} loss: {[(s.service_name, s.attributes) for s in wrongly]}")
    for node in nodes:
        assert node.directory_names() == fabric["mesh1"].names, f"{node.name} lost a live node under {LOSS:.0%} loss"

    # The detector still works under the same loss: a killed node is removed, and its removal
    # span arriving shows every node's spans up to then have been exported.
    victim = fabric["mesh1"]["compute"]
    killed_ns = time.time_ns()
    nemesis.kill(victim)
    observer = fabric["mesh1"]["broker"]
    removal = spans.wait_for_span(name="directory.removed", service=observer.name, timeout=10)
    assert removal.attributes.get("peer.name") == victim.name
    detected_s = (removal.start_ns - killed_ns) / 1e9
    wait_until(lambda: victim.name not in observer.directory_names(), 5, f"{observer.name} to drop {victim.name}")
    wrongly = [s for s in removals(spans.all()) if s.attributes.get("peer.name") != victim.name]
    assert not wrongly, f"live nodes removed under {LOSS:.0%} loss: {[(s.service_name, s.attributes) for s in wrongly]}"
    # the target is under 3 s; a heartbeat lost just before the kill may add one interval
    assert detected_s < DEFAULT_REMOVE_AFTER_S + 1.0, f"removal took {detected_s:.2f} s under loss"
    suspected = [s for s in spans.all() if s.name == "directory.suspect" and start_ns <= s.start_ns < killed_ns]
    print(f"\n{LOSS:.0%} loss for {HOLD_S:.0f} s on {len(nodes)} nodes: {len(suspected)} live nodes suspected, "
          f"0 wrongful removals; kill -> removed under loss in {detected_s:.2f} s")
