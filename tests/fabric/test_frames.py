"""Frames: the length-prefixed, versioned msgpack unit every protocol sends on a stream."""

from __future__ import annotations

import itertools

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.errors import FabricError, FrameError, FrameTooLarge
from fabric.frames import (
    DEFAULT_MAX_FRAME,
    HEADER,
    VERSION,
    Frame,
    FrameDecoder,
    Kind,
    decode_body,
    encode,
    parse_header,
    retag,
)

SAMPLE_BODY = {"op": "ping", "n": 7, "blob": b"\x00\xff", "list": [1, "two", None, True], "map": {"k": -1}}


def header(length: int, kind: int = Kind.REQUEST, version: int = VERSION) -> bytes:
    return HEADER.pack(version, kind, 0, length)


# -- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip_every_kind(kind):
    frame = Frame(kind, SAMPLE_BODY)
    data = encode(frame)
    assert data[0] == VERSION and data[1] == kind
    assert int.from_bytes(data[6:10], "big") == len(data) - HEADER.size
    decoder = FrameDecoder()
    assert decoder.feed(data) == [frame]
    assert decoder.pending == 0


def test_round_trip_empty_body():
    data = encode(Frame(Kind.GOSSIP_PULL))
    assert FrameDecoder().feed(data) == [Frame(Kind.GOSSIP_PULL, {})]


@pytest.mark.parametrize("tag", [0, 1, 0xFFFFFFFF])
def test_retag_changes_only_the_tag(tag):
    data = encode(Frame(Kind.REQUEST, SAMPLE_BODY, tag=7))
    assert FrameDecoder().feed(retag(data, tag)) == [Frame(Kind.REQUEST, SAMPLE_BODY, tag)]


def test_decoded_kind_is_the_enum():
    (frame,) = FrameDecoder().feed(encode(Frame(Kind.ERROR, {"e": "x"})))
    assert frame.kind is Kind.ERROR


# -- incremental decoding --------------------------------------------------------


def test_byte_by_byte_feeding_yields_each_frame_once_complete():
    frames = [Frame(Kind.GOSSIP_PUSH, {"i": i, "pad": "x" * i}) for i in range(3)]
    stream = b"".join(encode(f) for f in frames)
    ends = set()
    offset = 0
    for f in frames:
        offset += len(encode(f))
        ends.add(offset)
    decoder = FrameDecoder()
    got = []
    for i in range(len(stream)):
        out = decoder.feed(stream[i : i + 1])
        if i + 1 in ends:
            assert len(out) == 1, f"a frame ends at byte {i + 1}"
        else:
            assert out == [], f"no frame ends at byte {i + 1}"
        got += out
    assert got == frames
    assert decoder.pending == 0


def test_several_frames_in_one_chunk_and_a_partial_tail():
    frames = [Frame(k, {"k": int(k)}) for k in Kind]
    extra = encode(Frame(Kind.RESPONSE, {"tail": True}))
    decoder = FrameDecoder()
    got = decoder.feed(b"".join(encode(f) for f in frames) + extra[:4])
    assert got == frames
    assert decoder.pending == 4
    assert decoder.feed(extra[4:]) == [Frame(Kind.RESPONSE, {"tail": True})]
    assert decoder.pending == 0


@settings(max_examples=200, deadline=None)
@given(bodies=st.lists(st.dictionaries(st.text(max_size=5), st.binary(max_size=40), max_size=3), min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 400), max_size=8))
def test_frames_cut_into_any_chunks_decode_the_same(bodies, cuts):
    frames = [Frame(Kind.REQUEST, body, tag) for tag, body in enumerate(bodies, 1)]
    stream = b"".join(encode(f) for f in frames)
    edges = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder, got = FrameDecoder(), []
    for a, b in itertools.pairwise(edges):
        got += decoder.feed(stream[a:b])
    assert got == frames
    assert decoder.pending == 0


def test_pending_counts_partial_bytes():
    data = encode(Frame(Kind.REQUEST, SAMPLE_BODY))
    decoder = FrameDecoder()
    assert decoder.feed(data[:3]) == []
    assert decoder.pending == 3
    assert decoder.feed(data[3:-1]) == []
    assert decoder.pending == len(data) - 1


# -- limits ----------------------------------------------------------------------


def test_oversize_declared_length_raises_as_soon_as_the_header_arrives():
    decoder = FrameDecoder(max_size=100)
    assert decoder.feed(header(101)[:5]) == []  # not a whole header yet
    with pytest.raises(FrameTooLarge, match="101"):
        decoder.feed(header(101)[5:])  # no body byte was sent


def test_oversize_default_limit_from_header_alone():
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(header(DEFAULT_MAX_FRAME + 1))
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(header(2**32 - 1))


def test_exactly_max_size_is_accepted():
    body = {"b": b""}
    overhead = len(msgpack.packb(body, use_bin_type=True))
    limit = 50
    frame = Frame(Kind.REQUEST, {"b": b"x" * (limit - overhead - 1)})  # bin8 header is 1 byte longer
    data = encode(frame, max_size=limit)
    assert len(data) - HEADER.size <= limit
    assert FrameDecoder(max_size=limit).feed(data) == [frame]


def test_encode_over_max_raises_frame_too_large():
    with pytest.raises(FrameTooLarge, match="REQUEST"):
        encode(Frame(Kind.REQUEST, {"b": b"x" * 200}), max_size=100)
    with pytest.raises(FrameTooLarge):
        encode(Frame(Kind.REQUEST, {"b": b"x" * DEFAULT_MAX_FRAME}))


def test_frame_too_large_is_a_frame_error():
    assert issubclass(FrameTooLarge, FrameError)
    assert issubclass(FrameError, FabricError)


# -- malformed input -------------------------------------------------------------


def test_wrong_version_raises_frame_error():
    data = bytearray(encode(Frame(Kind.REQUEST, {"a": 1})))
    data[0] = VERSION + 1
    with pytest.raises(FrameError, match="version"):
        FrameDecoder().feed(bytes(data))
    with pytest.raises(FrameError, match="version"):
        parse_header(bytes(data[: HEADER.size]))


def test_wrong_version_is_detected_from_the_header_alone():
    with pytest.raises(FrameError, match="version"):
        FrameDecoder().feed(header(1000, version=0))


@pytest.mark.parametrize("kind", [0, 4, 9, 13, 99, 255])
def test_unknown_kind_raises_frame_error(kind):
    body = msgpack.packb({"a": 1})
    with pytest.raises(FrameError, match=f"unknown frame kind {kind}"):
        FrameDecoder().feed(header(len(body), kind=kind) + body)


@pytest.mark.parametrize("value", [[1, 2], 5, "text", b"bytes", None, True, 1.5])
def test_non_map_body_raises_frame_error(value):
    body = msgpack.packb(value, use_bin_type=True)
    with pytest.raises(FrameError, match="must be a map"):
        FrameDecoder().feed(header(len(body)) + body)


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # a byte msgpack never uses
        b"\x82\xa1a\x01",  # map of 2 with 1 entry (truncated)
        b"\x81\xa1a\x01\x01",  # extra data after the map
        b"\x81\xa2\xff\xfe\x01",  # key that is not utf-8
        b"\x81\x01\x02",  # int key (strict_map_key)
        b"",  # empty body
    ],
)
def test_garbage_msgpack_raises_frame_error(body):
    with pytest.raises(FrameError):
        FrameDecoder().feed(header(len(body)) + body)
    with pytest.raises(FrameError):
        decode_body(Kind.REQUEST, body)


def test_a_bad_frame_after_a_good_one_raises():
    good = encode(Frame(Kind.REQUEST, {"ok": 1}))
    decoder = FrameDecoder()
    assert decoder.feed(good) == [Frame(Kind.REQUEST, {"ok": 1})]
    with pytest.raises(FrameError):
        decoder.feed(header(1) + b"\xc1")


# -- properties ------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=512), max_size=st.sampled_from([0, 1, 16, 256, DEFAULT_MAX_FRAME]))
def test_feeding_arbitrary_bytes_only_raises_fabric_errors(data, max_size):
    decoder = FrameDecoder(max_size=max_size)
    try:
        frames = decoder.feed(data)
    except FabricError:
        return
    for frame in frames:
        assert isinstance(frame.kind, Kind)
        assert isinstance(frame.body, dict)
    assert decoder.pending <= len(data)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=256), kind=st.integers(0, 255))
def test_arbitrary_bodies_behind_a_valid_header_only_raise_frame_errors(body, kind):
    try:
        frames = FrameDecoder().feed(header(len(body), kind=kind) + body)
    except FrameError:
        return
    assert len(frames) == 1 and isinstance(frames[0].body, dict)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), stream=st.binary(max_size=512))
def test_feeding_arbitrary_chunks_only_raises_fabric_errors(data, stream):
    # half the time, start with a valid frame so the decoder gets past the first header
    if data.draw(st.booleans()):
        stream = encode(Frame(Kind.GOSSIP_PUSH, {"x": 1})) + stream
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    decoder = FrameDecoder(max_size=data.draw(st.sampled_from([8, 64, DEFAULT_MAX_FRAME])))
    for chunk in chunks:
        try:
            decoder.feed(chunk)
        except FabricError:
            return  # the stream is out of sync; a caller closes it


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=10,
)
bodies = st.dictionaries(st.text(max_size=10), msgpack_values, max_size=6)


@settings(max_examples=200, deadline=None)
@given(body=bodies, kind=st.sampled_from(list(Kind)))
def test_encode_then_feed_round_trips_arbitrary_bodies(body, kind):
    frame = Frame(kind, body)
    assert FrameDecoder().feed(encode(frame)) == [frame]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), frames=st.lists(st.builds(Frame, st.sampled_from(list(Kind)), bodies), min_size=1, max_size=4))
def test_round_trip_survives_arbitrary_chunking(data, frames):
    stream = b"".join(encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        got += decoder.feed(stream[a:b])
    assert got == frames
    assert decoder.pending == 0
