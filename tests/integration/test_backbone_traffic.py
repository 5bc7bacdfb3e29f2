"""Real processes confirm the simulator: per-gateway cross-mesh traffic, both designs.

Four meshes of a broker and a gateway each, default gossip timings; the gateways' gossip
counters (``status``) over a window of steady state against the simulator on the same
topology. The margin is ``bench.backbone.MARGIN`` (±25 %): real digests are a little bigger
(two addresses, service metadata), and ticks drift on a loaded machine.
"""

from __future__ import annotations

import pytest

from bench.backbone import MARGIN, compare, measure_real, simulate_like_real

pytestmark = pytest.mark.slow

MESHES = 4
WINDOW = 5.0


@pytest.mark.parametrize("mode", ["watch", "backbone"])
def test_real_gateways_send_and_receive_what_the_simulator_predicts(spawn, mode):
    real = measure_real(mode, MESHES, spawn, window=WINDOW, settle=2.0)
    sim = simulate_like_real(mode, MESHES, WINDOW)
    ratios = compare(real, sim)
    assert abs(ratios["msgs_ratio"] - 1) <= MARGIN, (real, sim.msgs_per_gateway_s, ratios)
    assert abs(ratios["bytes_ratio"] - 1) <= MARGIN, (real, sim.bytes_per_gateway_s, ratios)

