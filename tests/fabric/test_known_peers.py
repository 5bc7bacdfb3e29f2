"""Known peers: saved from the directory, loaded at boot, pulled once with the first pull."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import pytest

from fabric import known_peers
from fabric.directory import Directory
from fabric.gossip import digest as digests
from fabric.gossip.digest import Digest
from fabric.gossip.proto import GossipConfig, GossipCore, Peer, Pull

SELF = "5e1f" + "0" * 60
IDS = [f"{i:04x}" + "a" * 60 for i in range(12)]


def signed(node_id: str, mesh: str = "m1", addrs: tuple[str, ...] = ("10.0.0.1:4242",)) -> digests.SignedDigest:
    return digests.sign(Digest(node_id, mesh, "broker", addrs, 1, 1),
                        lambda body: hashlib.sha512(node_id.encode() + body).digest())


@pytest.mark.asyncio
async def test_membership_changes_are_saved_most_recently_heard_first_and_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(known_peers, "SAVE_DELAY", 0.0)
    directory = Directory(SELF)
    saver = known_peers.KnownPeers(tmp_path, "m1", directory)
    directory.apply(signed(SELF), now=0.0)
    for i, node_id in enumerate(IDS):
        directory.apply(signed(node_id, addrs=(f"10.0.0.{i}:4242",)), now=float(i))
    directory.apply(signed("ffff" + "b" * 60, mesh="m2"), now=99.0)  # another mesh's: not saved
    saved_path = tmp_path / known_peers.FILE_NAME
    for _ in range(100):  # the save runs on the loop, once
        await asyncio.sleep(0)
        if saved_path.exists():
            break
    saved = json.loads(saved_path.read_text())
    expected = [f"{node_id}@10.0.0.{i}:4242" for i, node_id in reversed(list(enumerate(IDS)))]
    assert saved == {"mesh": "m1", "peers": expected[:known_peers.MAX_PEERS]}
    assert [p.node_id for p in known_peers.load(tmp_path, "m1")] == [p.split("@")[0] for p in saved["peers"]]
    saver.close()


def test_an_emptied_mesh_keeps_the_last_list(tmp_path):
    directory = Directory(SELF)
    saver = known_peers.KnownPeers(tmp_path, "m1", directory)
    directory.apply(signed(IDS[0]), now=0.0)
    saver.save()
    directory.expire(now=100.0)  # everyone removed, as on one side of a partition
    saver.save()
    assert [p.node_id for p in known_peers.load(tmp_path, "m1")] == [IDS[0]]
    saver.close()


@pytest.mark.parametrize("content, message", [
    ("not json", "ignoring the known peers"),
    ('{"mesh": "m1", "peers": ["nonsense"]}', "bad peer address"),
    ('["a list"]', "not {mesh, peers"),
    ('{"mesh": "m2", "peers": []}', "of mesh 'm2', not 'm1'"),
])
def test_an_unusable_file_is_ignored_and_said(tmp_path, caplog, content, message):
    (tmp_path / known_peers.FILE_NAME).write_text(content)
    with caplog.at_level(logging.INFO, logger="fabric.known_peers"):
        assert known_peers.load(tmp_path, "m1") == []
    assert message in caplog.text


def test_no_file_is_no_peers(tmp_path):
    assert known_peers.load(tmp_path, "m1") == []


def test_hints_are_pulled_once_with_the_first_pull_beside_the_bootstrap():
    def own(heartbeat: int, leaving: bool) -> digests.SignedDigest:
        return signed(SELF)

    boot, hint = Peer(IDS[0], ("10.0.0.1:1",)), Peer(IDS[1], ("10.0.0.2:1",))
    core = GossipCore("m1", SELF, Directory(SELF), lambda *a: True, GossipConfig(), own,
                      bootstrap=[boot], hints=[hint, Peer(IDS[0], ("10.0.0.1:1",)), Peer(SELF, ("10.0.0.9:1",))])
    first = [s.to.node_id for s in core.tick(0.0) if isinstance(s.message, Pull)]
    assert first == [IDS[0], IDS[1]]  # the bootstrap peer once, the hint, never itself
    later = [s.to.node_id for s in core.tick(10.0) if isinstance(s.message, Pull)]
    assert later == [IDS[0]]  # alone still: the bootstrap again, the hint no more
