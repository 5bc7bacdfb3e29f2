"""A node's backbone seat: what it does with its transport when a member changes."""

from __future__ import annotations

import random
from types import SimpleNamespace

from fabric.backbone import Backbone
from fabric.gossip import digest as digests
from fabric.gossip.backbone import BackboneConfig, BackboneCore
from fabric.gossip.sim import FakeKeys
from fabric.transport import Transport

KEYS = FakeKeys()


class RecordingTransport(Transport):
    """The real transport's bookkeeping, with no endpoint: records the peers it forgets."""

    def __init__(self) -> None:
        super().__init__(None, node_id="self")  # type: ignore[arg-type]  # never dials here
        self.forgotten: list[str] = []

    def forget_peer(self, node_id: str) -> None:
        self.forgotten.append(node_id)


def test_a_member_that_restarts_or_turns_suspect_loses_its_cached_connection():
    rng = random.Random(7)
    self_id, self_signer = KEYS.new(rng)
    core = BackboneCore(self_id, lambda v, leaving: None, self_signer, KEYS.verify, BackboneConfig(), rng)  # type: ignore[arg-type]
    transport = RecordingTransport()
    seat = Backbone(SimpleNamespace(transport=transport), core, KEYS.verify)  # type: ignore[arg-type]
    core.table.subscribe(seat._forget_stale_connection)
    peer_id, signer = KEYS.new(rng)

    def record(incarnation: int, version: int, meta: dict) -> digests.SignedDigest:
        return digests.sign(digests.Digest(peer_id, "m2", "gateway", ("sim://p",), incarnation, version, False, meta),
                            signer)

    core.table.apply(record(1, 1, {"sv": 1}), 0.0)  # joined
    core.table.apply(record(1, 2, {"sv": 2}), 1.0)  # its summary moved on: same process
    assert transport.forgotten == []
    core.table.apply(record(2, 1, {"sv": 2}), 2.0)  # a new incarnation: the process restarted
    assert transport.forgotten == [peer_id]
    core.table.suspect(peer_id, (2, 1), 5.0)
    assert transport.forgotten == [peer_id, peer_id]
