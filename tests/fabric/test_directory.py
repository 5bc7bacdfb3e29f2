"""The topology directory: versions, failure detection, tombstones, leave, and name lookups."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.directory import ChangeKind, Directory, State
from fabric.errors import ResolveError
from fabric.gossip import digest as digests
from fabric.gossip.digest import Digest, SignedDigest

SELF = "5e1f" + "0" * 60
A = "aaaa" + "1" * 60
B = "bbbb" + "2" * 60
C1 = "cccc" + "3" * 60  # C1 and C2 share the id prefix "cccc"
C2 = "cccc" + "4" * 60
INC = 1_700_000_000_000


def signed(node_id: str, hb: int = 1, inc: int = INC, mesh: str = "mesh1", type: str = "broker",
           addrs: tuple[str, ...] = ("10.0.0.1:4242",), leaving: bool = False) -> SignedDigest:
    """A digest the directory takes as verified (the directory never checks signatures)."""
    digest = Digest(node_id, mesh, type, addrs, inc, hb, leaving)
    return digests.sign(digest, lambda body: hashlib.sha512(node_id.encode() + body).digest())


@pytest.fixture
def d() -> Directory:
    return Directory(SELF, suspect_after=1.5, remove_after=3.0, tombstone_ttl=60.0)


@pytest.fixture
def events(d: Directory) -> list[tuple[ChangeKind, str]]:
    seen: list[tuple[ChangeKind, str]] = []
    d.subscribe(lambda change: seen.append((change.kind, change.entry.node_id)))
    return seen


# -- versions ------------------------------------------------------------------------------


def test_a_new_node_joins_and_listeners_hear_it(d, events):
    change = d.apply(signed(A), now=0.0)
    assert change is not None and change.kind is ChangeKind.JOINED
    assert events == [(ChangeKind.JOINED, A)]
    entry = d.get(A)
    assert entry.name == f"mesh1.broker.{A[:6]}" and entry.state is State.ALIVE
    assert entry.addrs == ("10.0.0.1:4242",) and entry.last_heard == 0.0


def test_a_newer_heartbeat_is_news_for_gossip_but_not_an_event(d, events):
    d.apply(signed(A, hb=1), now=0.0)
    change = d.apply(signed(A, hb=2), now=1.0)
    assert change is not None and change.kind is ChangeKind.HEARTBEAT
    assert events == [(ChangeKind.JOINED, A)]  # the heartbeat was not told to listeners
    assert d.get(A).digest.heartbeat == 2 and d.get(A).last_heard == 1.0


@pytest.mark.parametrize("hb", [1, 4])
def test_an_older_or_equal_version_is_old_news(d, events, hb):
    d.apply(signed(A, hb=4), now=0.0)
    assert d.apply(signed(A, hb=hb), now=1.0) is None
    assert d.get(A).digest.heartbeat == 4
    assert d.get(A).last_heard == 0.0  # old news does not count as hearing from the node


def test_a_new_incarnation_beats_any_heartbeat_of_the_old_one(d, events):
    d.apply(signed(A, hb=900, inc=INC), now=0.0)
    change = d.apply(signed(A, hb=1, inc=INC + 1), now=1.0)
    assert change.kind is ChangeKind.CHANGED
    assert events[-1] == (ChangeKind.CHANGED, A)
    assert d.apply(signed(A, hb=901, inc=INC), now=2.0) is None  # the old process is gone


def test_moved_addresses_are_a_change(d, events):
    d.apply(signed(A, hb=1), now=0.0)
    change = d.apply(signed(A, hb=2, addrs=("10.0.0.9:4242",)), now=1.0)
    assert change.kind is ChangeKind.CHANGED and d.get(A).addrs == ("10.0.0.9:4242",)
    assert events == [(ChangeKind.JOINED, A), (ChangeKind.CHANGED, A)]


# -- failure detection ---------------------------------------------------------------------


def test_a_silent_node_turns_suspect_then_recovers_when_its_heartbeat_moves(d, events):
    d.apply(signed(A, hb=1), now=0.0)
    assert d.expire(now=1.4) == []
    changes = d.expire(now=1.5)
    assert [c.kind for c in changes] == [ChangeKind.SUSPECT]
    assert d.get(A).state is State.SUSPECT
    assert d.expire(now=1.6) == []  # suspect is told once
    assert d.entries(alive_only=True) == [] and [e.node_id for e in d.entries()] == [A]

    assert d.apply(signed(A, hb=1), now=2.0) is None  # the same heartbeat again: still suspect
    assert d.get(A).state is State.SUSPECT
    change = d.apply(signed(A, hb=2), now=2.0)
    assert change.kind is ChangeKind.RECOVERED and d.get(A).state is State.ALIVE
    assert [e.node_id for e in d.entries(alive_only=True)] == [A]
    assert events == [(ChangeKind.JOINED, A), (ChangeKind.SUSPECT, A), (ChangeKind.RECOVERED, A)]


def test_a_node_silent_for_remove_after_is_removed(d, events):
    d.apply(signed(A, hb=5), now=0.0)
    d.apply(signed(B, hb=1), now=2.0)
    changes = d.expire(now=3.0)
    assert [(c.kind, c.entry.node_id) for c in changes] == [(ChangeKind.REMOVED, A)]
    assert d.get(A) is None and d.get(B) is not None and len(d) == 1
    assert events[-1] == (ChangeKind.REMOVED, A)


def test_down_says_why_a_node_is_believed_down_and_nothing_for_live_or_unknown_ones(d):
    d.apply(signed(A, hb=1), now=0.0)
    d.apply(signed(B, hb=1), now=0.0)
    assert d.down(A) is None and d.down(C1) is None  # alive; never held
    d.apply(signed(B, hb=2), now=1.4)
    d.expire(now=2.0)
    assert (d.down(A), d.down(B)) == ("suspected down", None)
    d.expire(now=3.0)
    assert d.down(A) == "gone from the directory"
    d.apply(signed(A, hb=1, inc=INC + 1), now=3.5)  # a new process
    assert d.down(A) is None


def test_the_own_entry_never_expires(d):
    d.apply(signed(SELF), now=0.0)
    assert d.expire(now=1000.0) == []
    assert d.get(SELF) is not None


def test_a_removed_node_is_not_resurrected_by_an_old_digest(d, events):
    d.apply(signed(A, hb=5), now=0.0)
    d.expire(now=3.0)
    # A peer that has not removed A yet still gossips its last digest, or an older one.
    assert d.apply(signed(A, hb=5), now=3.5) is None
    assert d.apply(signed(A, hb=4), now=3.5) is None
    assert d.get(A) is None


def test_a_removed_node_comes_back_with_a_new_heartbeat_or_incarnation(d, events):
    d.apply(signed(A, hb=5), now=0.0)
    d.apply(signed(B, hb=5), now=0.0)
    d.expire(now=3.0)
    change = d.apply(signed(A, hb=6), now=4.0)  # it was only paused
    assert change.kind is ChangeKind.JOINED and d.get(A).state is State.ALIVE
    change = d.apply(signed(B, hb=1, inc=INC + 1), now=4.0)  # it restarted
    assert change.kind is ChangeKind.JOINED
    assert events[-2:] == [(ChangeKind.JOINED, A), (ChangeKind.JOINED, B)]


def test_tombstones_are_forgotten_after_their_ttl(d):
    d.apply(signed(A, hb=5), now=0.0)
    d.expire(now=3.0)
    d.expire(now=62.9)
    assert d.apply(signed(A, hb=5), now=62.9) is None
    d.expire(now=63.0)  # tombstone_ttl after the removal
    assert d.apply(signed(A, hb=5), now=63.0).kind is ChangeKind.JOINED


# -- leave -----------------------------------------------------------------------------------


def test_leave_removes_the_node_at_once(d, events):
    d.apply(signed(A, hb=5), now=0.0)
    change = d.apply(signed(A, hb=6, leaving=True), now=0.1)
    assert change.kind is ChangeKind.LEFT
    assert d.get(A) is None and events[-1] == (ChangeKind.LEFT, A)


def test_a_left_node_stays_gone_for_its_incarnation_but_may_restart(d, events):
    d.apply(signed(A, hb=5), now=0.0)
    d.apply(signed(A, hb=6, leaving=True), now=0.1)
    assert d.apply(signed(A, hb=10_000), now=0.2) is None  # late heartbeats of that process
    assert d.get(A) is None
    assert d.apply(signed(A, hb=1, inc=INC + 1), now=0.3).kind is ChangeKind.JOINED


def test_a_leave_of_an_unknown_node_is_remembered(d, events):
    assert d.apply(signed(A, hb=6, leaving=True), now=0.0) is None
    assert d.apply(signed(A, hb=5), now=0.1) is None  # an older digest arriving late
    assert d.get(A) is None and events == []


def test_an_older_leave_does_not_remove_a_newer_entry(d):
    d.apply(signed(A, hb=7), now=0.0)
    assert d.apply(signed(A, hb=6, leaving=True), now=0.1) is None
    assert d.get(A) is not None


# -- asking ----------------------------------------------------------------------------------


@pytest.fixture
def populated(d: Directory) -> Directory:
    d.apply(signed(SELF, mesh="mesh1", type="gateway"), now=0.0)
    d.apply(signed(A, mesh="mesh1", type="broker"), now=0.0)
    d.apply(signed(B, mesh="mesh2", type="broker"), now=0.0)
    d.apply(signed(C1, mesh="mesh2", type="compute"), now=0.0)
    d.apply(signed(C2, mesh="mesh2", type="compute"), now=0.0)
    return d


def test_entries_are_sorted_by_name_and_filtered(populated):
    names = [e.name for e in populated.entries()]
    assert names == sorted(names) and len(names) == 5
    assert {e.node_id for e in populated.entries(mesh="mesh2")} == {B, C1, C2}
    assert [e.node_id for e in populated.entries(mesh="mesh2", type="broker")] == [B]
    assert populated.count() == 5 and populated.count("mesh1") == 2 and populated.count("mesh2") == 3
    assert populated.count("nope") == 0


def test_entries_returns_a_copy_and_follows_changes(populated):
    first = populated.entries(mesh="mesh1")
    first.clear()
    assert len(populated.entries(mesh="mesh1")) == 2
    populated.expire(now=2.0)  # everyone but SELF turns suspect
    assert [e.node_id for e in populated.entries(alive_only=True)] == [SELF]
    populated.expire(now=3.0)
    assert [e.node_id for e in populated.entries()] == [SELF] and populated.count("mesh2") == 0


def test_a_restart_as_another_type_moves_the_entry(populated):
    assert [e.node_id for e in populated.entries(mesh="mesh1", type="broker")] == [A]
    populated.apply(signed(A, mesh="mesh1", type="registry", inc=INC + 1), now=1.0)
    assert populated.entries(mesh="mesh1", type="broker") == []
    assert [e.name for e in populated.entries(type="registry")] == [f"mesh1.registry.{A[:6]}"]
    populated.apply(signed(A, mesh="mesh3", type="registry", inc=INC + 2), now=1.0)
    assert populated.count("mesh1") == 1 and populated.count("mesh3") == 1


def test_resolve_by_exact_name(populated):
    assert populated.resolve(f"mesh2.broker.{B[:6]}").node_id == B


# ids that collide on their first 6 hex (one name for two nodes of a mesh and type) and ids that do not
POOL = ["abcdef" + "1" * 58, "abcdef" + "2" * 58, "123456" + "3" * 58, "fedcba" + "4" * 58]
OPERATION = st.tuples(st.sampled_from(["digest", "restart", "leave", "expire"]), st.sampled_from(POOL),
                      st.sampled_from(["mesh1", "mesh2"]), st.sampled_from(["broker", "gateway"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(OPERATION, max_size=30))
def test_resolve_by_name_agrees_with_a_scan_of_every_entry(operations):
    """The name index follows joins, restarts as another type or mesh, leaves and removals:
    a name resolves to an entry of that name whenever (and only when) one is listed."""
    d = Directory(SELF, suspect_after=1.5, remove_after=3.0)
    now, heartbeat, incarnation = 0.0, 1, {node: INC for node in POOL}
    for kind, node, mesh, type in operations:
        now, heartbeat = now + 0.5, heartbeat + 1
        if kind == "expire":
            now += 2.0
            d.expire(now)
        else:
            incarnation[node] += kind == "restart"
            d.apply(signed(node, hb=heartbeat, inc=incarnation[node], mesh=mesh, type=type,
                           leaving=kind == "leave"), now)
        for name in {f"{m}.{t}.{n[:6]}" for n in POOL for m in ("mesh1", "mesh2") for t in ("broker", "gateway")}:
            listed = [e for e in d if e.name == name]
            if listed:
                assert d.resolve(name) in listed
            else:
                with pytest.raises(ResolveError):
                    d.resolve(name)


def test_resolve_by_mesh_and_type_picks_a_live_one(populated):
    picked = {populated.resolve("mesh2.compute", rng=random.Random(seed)).node_id for seed in range(20)}
    assert picked == {C1, C2}
    populated.expire(now=2.0)  # all suspect now
    populated.apply(signed(C2, mesh="mesh2", type="compute", hb=2), now=2.0)  # C2 recovers
    assert {populated.resolve("mesh2.compute", rng=random.Random(s)).node_id for s in range(20)} == {C2}


def test_resolve_by_id_prefix(populated):
    assert populated.resolve("aaaa").node_id == A
    assert populated.resolve(B[:10].upper()).node_id == B


@pytest.mark.parametrize("target, node", [
    (f"mesh2.{B[:4]}", B), (f"mesh2.{B[:12].upper()}", B), (f"mesh2.broker.{B[:10]}", B),
    (f"mesh2.compute.{C1[:5]}", C1), (f"mesh2.{C2[:8]}", C2), (f"mesh1.broker.{A[:4]}", A),
])
def test_resolve_by_id_prefix_within_a_mesh_and_type(populated, target, node):
    assert populated.resolve(target).node_id == node


@pytest.mark.parametrize("target", [f"mesh1.{B[:6]}", f"mesh2.registry.{B[:6]}", f"mesh2.{B[:3]}",
                                    "mesh2.bbbz", f"mesh2.broker.x.{B[:6]}"])
def test_a_prefix_in_the_wrong_mesh_or_type_or_too_short_does_not_resolve(populated, target):
    with pytest.raises(ResolveError, match=r"<mesh>\.<prefix>"):
        populated.resolve(target)


def test_an_ambiguous_prefix_within_a_mesh_names_the_candidates(populated):
    with pytest.raises(ResolveError, match="ambiguous"):
        populated.resolve("mesh2.cccc")
    assert populated.resolve(f"mesh2.{C1[:5]}").node_id == C1


def test_an_ambiguous_prefix_names_the_candidates(populated):
    with pytest.raises(ResolveError) as info:
        populated.resolve("cccc")
    message = str(info.value)
    assert "ambiguous" in message and C1[:6] in message and C2[:6] in message


@pytest.mark.parametrize("target", ["mesh9.broker", "mesh1.console", "ffff", "aaa", "x.y.z", ""])
def test_an_unknown_target_raises_a_helpful_resolve_error(populated, target):
    with pytest.raises(ResolveError) as info:
        populated.resolve(target)
    message = str(info.value)
    assert repr(target) in message
    assert "<mesh>.<type>" in message and f"mesh2.broker.{B[:6]}" in message  # says what is known


def test_resolve_in_an_empty_directory_says_nothing_is_known(d):
    with pytest.raises(ResolveError, match="nothing yet"):
        d.resolve("mesh1.broker")


def test_a_removed_node_no_longer_resolves(populated):
    populated.expire(now=3.0)
    with pytest.raises(ResolveError):
        populated.resolve("aaaa")


# -- misc ------------------------------------------------------------------------------------


def test_unsubscribe_stops_the_listener(d):
    heard = []
    unsubscribe = d.subscribe(heard.append)
    d.apply(signed(A), now=0.0)
    unsubscribe()
    d.apply(signed(B), now=0.0)
    assert [c.entry.node_id for c in heard] == [A]


def test_as_dict_is_plain_values(populated):
    view = populated.get(A).as_dict(now=1.25)
    assert view["name"] == f"mesh1.broker.{A[:6]}" and view["id_prefix"] == A[:6]
    assert view["state"] == "alive" and view["last_heard_s"] == 1.25 and view["addrs"] == ["10.0.0.1:4242"]


@pytest.mark.parametrize("suspect, remove", [(0, 1), (2, 1), (-1, 3)])
def test_bad_timings_are_refused(suspect, remove):
    with pytest.raises(ValueError):
        Directory(SELF, suspect_after=suspect, remove_after=remove)
