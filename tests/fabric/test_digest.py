"""Signed gossip digests: only the key holder can produce a valid digest for its id."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.errors import DigestError, FabricError, ForgedDigest
from fabric.gossip import digest as digests
from fabric.gossip.digest import MAX_DIGEST_BYTES, Digest, SignedDigest, message_id
from fabric.identity import NODE_TYPES, Identity, node_name
from fabric.node import verify_signature

ALICE = Identity.generate()
MALLORY = Identity.generate()
ADDR = "127.0.0.1:4242"


def make_digest(identity: Identity = ALICE, **changes) -> Digest:
    fields = dict(node_id=identity.node_id, mesh="mesh1", type="broker", addrs=(ADDR, "[::1]:4242"),
                  incarnation=1_700_000_000_000, heartbeat=3, leaving=False, meta={"zone": "a", "n": [1, 2]})
    fields.update(changes)
    return Digest(**fields)


def hand_raw(fields: list, signer: Identity = ALICE, signature: bytes | None = None) -> bytes:
    """Wire bytes built by hand, following digest.py's layout: ``[body, sig]``, body = the field list."""
    body = msgpack.packb(fields, use_bin_type=True)
    sig = signer.sign(body) if signature is None else signature
    return msgpack.packb([body, sig], use_bin_type=True)


def valid_fields(identity: Identity = ALICE, **changes) -> list:
    f = {"id": identity.node_id, "name": None, "mesh": "mesh1", "type": "broker", "addrs": [ADDR],
         "inc": 5, "hb": 1, "leaving": False, "meta": {}}
    f.update(changes)
    if f["name"] is None:
        f["name"] = node_name(f["mesh"], f["type"], f["id"]) if isinstance(f["id"], str) else "x"
    return [f[k] for k in digests._FIELDS]


# -- the happy path --------------------------------------------------------------


def test_sign_then_decode_round_trips():
    digest = make_digest()
    signed = digests.sign(digest, ALICE.sign)
    assert isinstance(signed, SignedDigest)
    decoded = digests.decode(signed.raw, verify_signature)
    assert decoded.digest == digest
    assert decoded.digest.meta == digest.meta
    assert decoded.digest.addrs == digest.addrs  # a tuple again
    assert decoded.digest.name == node_name("mesh1", "broker", ALICE.node_id)
    assert decoded.digest.version == (digest.incarnation, 3)
    assert decoded.raw == signed.raw
    assert decoded.msg_id == signed.msg_id == message_id(signed.raw)
    assert len(decoded.msg_id) == 16


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_round_trip_every_type_and_leaving(node_type):
    digest = make_digest(type=node_type, leaving=True, addrs=(), meta={})
    assert digests.decode(digests.sign(digest, ALICE.sign).raw, verify_signature).digest == digest


def test_hand_built_digest_following_the_layout_decodes():
    decoded = digests.decode(hand_raw(valid_fields()), verify_signature)
    assert decoded.digest.node_id == ALICE.node_id
    assert decoded.digest.addrs == (ADDR,)


def test_decode_accepts_bytearray():
    raw = digests.sign(make_digest(), ALICE.sign).raw
    assert digests.decode(bytearray(raw), verify_signature).raw == raw


def test_different_messages_have_different_ids():
    a = digests.sign(make_digest(heartbeat=1), ALICE.sign)
    b = digests.sign(make_digest(heartbeat=2), ALICE.sign)
    assert a.msg_id != b.msg_id


# -- forgeries -------------------------------------------------------------------


def test_tampered_body_is_forged():
    raw = digests.sign(make_digest(), ALICE.sign).raw
    # change the port in the signed body: still a well-formed digest, but not what was signed
    tampered = raw.replace(ADDR.encode(), b"127.0.0.1:4243")
    assert tampered != raw and len(tampered) == len(raw)
    with pytest.raises(ForgedDigest, match="forged"):
        digests.decode(tampered, verify_signature)


def test_tampered_signature_is_forged():
    raw = bytearray(digests.sign(make_digest(), ALICE.sign).raw)
    raw[-1] ^= 0x01  # the signature is the last 64 bytes
    with pytest.raises(ForgedDigest):
        digests.decode(bytes(raw), verify_signature)


def test_signature_from_another_key_is_forged():
    # Mallory signs a digest that claims Alice's id
    signed = digests.sign(make_digest(ALICE), MALLORY.sign)
    with pytest.raises(ForgedDigest, match=node_name("mesh1", "broker", ALICE.node_id)):
        digests.decode(signed.raw, verify_signature)


def test_hand_built_digest_signed_by_another_key_is_forged():
    with pytest.raises(ForgedDigest):
        digests.decode(hand_raw(valid_fields(ALICE), signer=MALLORY), verify_signature)


def test_zero_signature_is_forged():
    with pytest.raises(ForgedDigest):
        digests.decode(hand_raw(valid_fields(), signature=bytes(64)), verify_signature)


# A failed verification is slow when RUST_BACKTRACE=1 (the Rust error captures a backtrace,
# ~50 ms), and about a third of the flips reach it: keep this one small.
@settings(max_examples=100, deadline=None)
@given(position=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_is_rejected(position, mask):
    raw = bytearray(digests.sign(make_digest(), ALICE.sign).raw)
    raw[position % len(raw)] ^= mask
    with pytest.raises(DigestError):
        digests.decode(bytes(raw), verify_signature)


# -- malformed digests (not signature failures) ----------------------------------


def test_name_that_does_not_match_the_id_is_rejected_before_the_signature():
    other = MALLORY.node_id
    fields = valid_fields(ALICE, name=node_name("mesh1", "broker", other))
    with pytest.raises(DigestError, match="does not match its id") as info:
        digests.decode(hand_raw(fields), verify_signature)
    assert not isinstance(info.value, ForgedDigest)


@pytest.mark.parametrize("name", ["mesh1.gateway.{p}", "mesh2.broker.{p}", "mesh1.broker.{p}x", "x"])
def test_name_must_be_derived_from_mesh_type_and_id(name):
    fields = valid_fields(ALICE, name=name.format(p=ALICE.node_id[:6]))
    with pytest.raises(DigestError, match="does not match"):
        digests.decode(hand_raw(fields), verify_signature)


def test_unknown_type_is_rejected():
    fields = valid_fields(ALICE, type="toaster")  # name derived consistently, properly signed
    with pytest.raises(DigestError, match="unknown node type 'toaster'") as info:
        digests.decode(hand_raw(fields), verify_signature)
    assert not isinstance(info.value, ForgedDigest)


def test_oversized_raw_is_rejected():
    signed = digests.sign(make_digest(meta={"pad": "x" * MAX_DIGEST_BYTES}), ALICE.sign)
    assert len(signed.raw) > MAX_DIGEST_BYTES
    with pytest.raises(DigestError, match="over the 4096-byte limit"):
        digests.decode(signed.raw, verify_signature)


def test_oversized_raw_is_rejected_before_parsing():
    calls = []

    def verify(*args):
        calls.append(args)
        return True

    with pytest.raises(DigestError, match="limit"):
        digests.decode(b"\x00" * (MAX_DIGEST_BYTES + 1), verify)
    assert calls == []


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"id": "AB" * 32}, "node id"),
        ({"id": "ab" * 31}, "node id"),
        ({"id": "zz" * 32}, "node id"),
        ({"id": 12}, "node id"),
        ({"mesh": 1}, "must be strings"),
        ({"addrs": "127.0.0.1:1"}, "addresses"),
        ({"addrs": [1]}, "addresses"),
        ({"inc": -1}, "unsigned"),
        ({"inc": True}, "unsigned"),
        ({"hb": 2**63}, "unsigned"),
        ({"hb": 1.5}, "unsigned"),
        ({"leaving": 0}, "unsigned"),
        ({"meta": []}, "unsigned"),
    ],
)
def test_bad_field_types_are_rejected(changes, match):
    with pytest.raises(DigestError, match=match) as info:
        digests.decode(hand_raw(valid_fields(ALICE, **changes)), verify_signature)
    assert not isinstance(info.value, ForgedDigest)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        msgpack.packb(1),
        msgpack.packb([b"x"]),
        msgpack.packb([b"x", b"y", b"z"]),
        msgpack.packb({"a": 1, "b": 2}),
        msgpack.packb(["body", b"s" * 64]),
        msgpack.packb([msgpack.packb([1, 2, 3]), b"s" * 64]),
        msgpack.packb([msgpack.packb(valid_fields()), b"s" * 63]),
        msgpack.packb([msgpack.packb({"id": 1}), b"s" * 64]),
        msgpack.packb([msgpack.packb(valid_fields()) + b"\x00", b"s" * 64]),
    ],
)
def test_structurally_wrong_digests_are_rejected(raw):
    with pytest.raises(DigestError):
        digests.decode(raw, verify_signature)


@pytest.mark.parametrize("raw", [None, "text", 12, [b"a", b"b"]])
def test_non_bytes_raw_is_rejected(raw):
    with pytest.raises(DigestError, match="must be bytes"):
        digests.decode(raw, verify_signature)


# -- properties: nothing but DigestError escapes ---------------------------------

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=True) | st.text(max_size=70) | st.binary(max_size=70))
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=9) | st.dictionaries(st.text(max_size=5) | st.binary(max_size=5), c, max_size=4),
    max_leaves=8,
)
shallow = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars, max_size=3)


def _decode_only_digest_errors(raw: bytes) -> None:
    try:
        result = digests.decode(raw, verify_signature)
    except DigestError:
        return
    assert isinstance(result, SignedDigest)  # a random input that is valid would be a miracle, but legal


@FAST
@given(raw=st.binary(max_size=MAX_DIGEST_BYTES + 16))
def test_arbitrary_bytes_only_raise_digest_errors(raw):
    _decode_only_digest_errors(raw)


@FAST
@given(body=st.binary(max_size=300), sig=st.binary(min_size=60, max_size=68))
def test_random_body_and_signature_only_raise_digest_errors(body, sig):
    _decode_only_digest_errors(msgpack.packb([body, sig], use_bin_type=True))


@FAST
@given(value=values)
def test_random_msgpack_values_only_raise_digest_errors(value):
    _decode_only_digest_errors(msgpack.packb(value, use_bin_type=True))


@FAST
@given(fields=st.lists(shallow, min_size=9, max_size=9), sig=st.binary(min_size=64, max_size=64))
def test_random_nine_field_bodies_only_raise_digest_errors(fields, sig):
    _decode_only_digest_errors(msgpack.packb([msgpack.packb(fields, use_bin_type=True), sig], use_bin_type=True))


@FAST
@given(
    node_id=st.sampled_from([ALICE.node_id, MALLORY.node_id]) | st.text("0123456789abcdef", min_size=64, max_size=64),
    mesh=st.text(max_size=8),
    type_=st.sampled_from((*NODE_TYPES, "toaster", "")),
    addrs=st.lists(st.text(max_size=20), max_size=3),
    inc=st.integers(min_value=0, max_value=2**63 - 1) | st.sampled_from([0, 2**63 - 1, 2**63, 2**64 - 1, -1]),
    hb=st.integers(min_value=0, max_value=2**63 - 1) | st.sampled_from([0, 2**63 - 1, 2**63, 2**64 - 1, -1]),
    leaving=st.sampled_from([False, True, False, True, 0]),
    meta=st.dictionaries(st.text(max_size=5), scalars, max_size=3),
    use_right_name=st.booleans(),
    signer=st.sampled_from([ALICE, MALLORY]),
)
def test_nearly_valid_digests_only_raise_digest_errors(node_id, mesh, type_, addrs, inc, hb, leaving, meta,
                                                         use_right_name, signer):
    name = node_name(mesh, type_, node_id) if use_right_name else f"{mesh}.{type_}"
    raw = hand_raw([node_id, name, mesh, type_, addrs, inc, hb, leaving, meta], signer=signer)
    try:
        result = digests.decode(raw, verify_signature)
    except DigestError:
        return
    # whatever is accepted must really be signed by the id it claims, with a derived name
    assert result.digest.node_id == signer.node_id
    assert result.digest.name == name
    assert type_ in NODE_TYPES


def test_only_fabric_errors_by_hierarchy():
    assert issubclass(ForgedDigest, DigestError) and issubclass(DigestError, FabricError)
