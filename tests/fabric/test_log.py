"""The broker's durable log: append/read, torn tails truncated at open, idempotent producers."""

from __future__ import annotations

import asyncio
import zlib

import msgpack
import pytest

from fabric.errors import ConfigError
from fabric.services import log as log_module
from fabric.services import records
from fabric.services.log import Log, TopicLog, check_topic


def test_append_then_read_back_in_order(tmp_path):
    log = TopicLog(tmp_path / "t.log")
    offsets = [log.append(f"v{i}".encode(), key=b"k", headers={"h": str(i)}).offset for i in range(5)]
    assert offsets == [0, 1, 2, 3, 4]
    got = log.read(1, 3)
    assert [(r.offset, r.value, r.headers["h"]) for r in got] == [(1, b"v1", "1"), (2, b"v2", "2"), (3, b"v3", "3")]
    assert log.read(5, 10) == [] and log.read(0, 0) == []


def test_reopen_keeps_everything(tmp_path):
    log = TopicLog(tmp_path / "t.log")
    for i in range(10):
        log.append(str(i).encode(), producer_id="p", seq=i)
    log.close()
    again = TopicLog(tmp_path / "t.log")
    assert len(again) == 10 and again.truncated_bytes == 0
    assert again.append(b"retry", producer_id="p", seq=3).duplicate  # dedup state rebuilt from disk
    assert again.append(b"new").offset == 10


def test_reopen_places_records_by_their_stored_size_not_a_fresh_encoding(tmp_path):
    # Another writer may encode a record in more bytes than this one would (here the first
    # record's offset as a uint64, not a one-byte fixint): the index follows the bytes on disk.
    rest = msgpack.packb([b"first", None, {}, 1, "p", 0], use_bin_type=True)[1:]  # the six fields after the offset
    body = b"\x97\xcf" + bytes(8) + rest
    first = records.HEADER.pack(len(body), zlib.crc32(body)) + body
    assert len(first) == len(records.encode(records.scan(first)[0][0])) + 8
    path = tmp_path / "t.log"
    path.write_bytes(first + records.encode(records.Record(1, b"second", None, {}, 2, "p", 1)))
    log = TopicLog(path)
    assert [(r.offset, r.value) for r in log.read(0, 10)] == [(0, b"first"), (1, b"second")]
    assert [r.value for r in log.read(1, 1)] == [b"second"]
    log.close()


@pytest.mark.parametrize("tail", [b"\x00\x07", b"\x00\x00\x00\x10\x00\x00\x00\x00abc", None])
def test_a_torn_tail_is_truncated_and_never_served(tmp_path, tail):
    path = tmp_path / "t.log"
    log = TopicLog(path)
    for i in range(3):
        log.append(f"ok{i}".encode())
    log.close()
    good_size = path.stat().st_size
    if tail is None:  # a whole record whose checksum does not match (a bit flipped on disk)
        bad = bytearray(records.encode(records.Record(3, b"flipped")))
        bad[-1] ^= 0xFF
        tail = bytes(bad)
    with open(path, "ab") as f:
        f.write(tail)
    reopened = TopicLog(path)
    assert reopened.truncated_bytes == len(tail)
    assert path.stat().st_size == good_size
    assert [r.value for r in reopened.read(0, 10)] == [b"ok0", b"ok1", b"ok2"]
    assert reopened.append(b"after").offset == 3


def test_retried_sequence_is_stored_once(tmp_path):
    log = TopicLog(tmp_path / "t.log")
    first = log.append(b"a", producer_id="p1", seq=0)
    retry = log.append(b"a", producer_id="p1", seq=0)
    other = log.append(b"a", producer_id="p2", seq=0)
    assert (first.offset, first.duplicate) == (0, False)
    assert (retry.offset, retry.duplicate) == (0, True)
    assert (other.offset, other.duplicate) == (1, False)
    assert len(log) == 2


def test_a_batch_reports_each_records_offset_and_skips_the_ones_stored_before(tmp_path):
    log = TopicLog(tmp_path / "t.log", fsync=False)
    first = log.write_many([(b"a", None, {}), (b"b", b"k", {"h": "1"})], producer_id="p", seq=0)
    assert first == log_module.Written([0, 1], [False, False])
    overlapping = log.write_many([(b"b", b"k", {"h": "1"}), (b"c", None, {})], producer_id="p", seq=1)
    assert overlapping == log_module.Written([1, 2], [True, False])  # seq 1 was stored, seq 2 is new
    assert [(r.value, r.key, r.headers, r.seq) for r in log.read(0, 10)] == [
        (b"a", None, {}, 0), (b"b", b"k", {"h": "1"}, 1), (b"c", None, {}, 2)]


def test_the_producer_window_remembers_at_least_its_last_pairs(tmp_path, monkeypatch):
    monkeypatch.setattr(log_module, "_DEDUP_WINDOW", 8)
    log = TopicLog(tmp_path / "t.log", fsync=False)
    for seq in range(40):
        log.write(b"v", producer_id="p", seq=seq)
        assert all(log.write(b"v", producer_id="p", seq=recent).duplicate for recent in range(max(0, seq - 7), seq + 1))
    assert not log.write(b"v", producer_id="p", seq=0).duplicate  # long forgotten: stored again
    assert len(log._dedup) <= 16


@pytest.mark.asyncio
async def test_a_commit_waits_a_loop_turn_for_waiting_requests_only(tmp_path):
    ran: list[bool] = []

    async def another_handler(waiting: bool) -> None:
        ran.append(waiting)

    for waiting in (False, True):
        log = TopicLog(tmp_path / f"{waiting}.log", others_waiting=lambda waiting=waiting: waiting)
        other = asyncio.ensure_future(another_handler(waiting))
        await log.sync_through(log.write(b"lone").offset)
        assert log.fsyncs == 1 and ran == ([] if not waiting else [True])  # no turn taken, or one
        await other
        ran.clear()
        log.close()


@pytest.mark.asyncio
async def test_writers_told_apart_by_the_waiting_count_still_share_fsyncs(tmp_path):
    waiting = 50  # as a transport's backlog: handlers not started yet
    log = TopicLog(tmp_path / "t.log", others_waiting=lambda: waiting > 0)

    async def produce(i: int) -> None:
        nonlocal waiting
        waiting -= 1
        await log.sync_through(log.write(f"r{i}".encode()).offset)

    await asyncio.gather(*(produce(i) for i in range(50)))
    assert 1 <= log.fsyncs < 5 and len(log) == 50
    log.close()


def test_log_finds_existing_topics_and_refuses_bad_names(tmp_path):
    log = Log(tmp_path / "log")
    log.topic("orders", create=True).append(b"x")
    assert log.topic("missing", create=False) is None
    log.close()
    again = Log(tmp_path / "log")
    assert set(again.topics) == {"orders"}
    for bad in ["../x", "", "a/b", ".hidden", "x" * 201, None, 3, {"a": 1}]:
        with pytest.raises(ConfigError):
            check_topic(bad)


def test_topic_names_found_valid_are_remembered_up_to_a_bound(monkeypatch):
    monkeypatch.setattr(log_module, "_VALID_TOPICS", set())
    monkeypatch.setattr(log_module, "_VALID_TOPICS_KEPT", 3)
    for name in ["a", "b", "a", "c", "d", "e"]:
        assert check_topic(name) == name
    assert log_module._VALID_TOPICS == {"a", "b", "c"}
    assert check_topic("e") == "e"  # past the bound: checked each time, as before
    with pytest.raises(ConfigError):
        check_topic("../a")


@pytest.mark.asyncio
async def test_concurrent_writers_share_fsyncs_and_each_waits_for_its_own_record(tmp_path):
    log = TopicLog(tmp_path / "t.log")

    async def produce(i: int) -> int:
        appended = log.write(f"r{i}".encode())
        await log.sync_through(appended.offset)
        assert log._durable > appended.offset  # released only once its record is on disk
        return appended.offset

    offsets = await asyncio.gather(*(produce(i) for i in range(50)))
    assert sorted(offsets) == list(range(50))
    assert 1 <= log.fsyncs < 50  # group commit: far fewer fsyncs than records
    log.close()
    assert len(TopicLog(tmp_path / "t.log")) == 50


@pytest.mark.asyncio
async def test_a_retried_record_still_waits_until_it_is_durable(tmp_path):
    log = TopicLog(tmp_path / "t.log")
    first = log.write(b"a", producer_id="p", seq=1)
    retry = log.write(b"a", producer_id="p", seq=1)
    assert retry.duplicate and retry.offset == first.offset
    assert log._durable == 0
    await log.sync_through(retry.offset)
    assert log._durable == 1


def test_the_file_grows_ahead_of_its_records_and_a_clean_close_cuts_the_zeros(tmp_path):
    path = tmp_path / "t.log"
    log = TopicLog(path)
    log.append(b"one")
    end = log._written
    assert 0 < end < log_module.GROW_MIN
    assert path.stat().st_size == log_module.GROW_MIN  # zeros past the record
    assert path.read_bytes()[end:].count(0) == log_module.GROW_MIN - end
    log.close()
    assert path.stat().st_size == end


def test_a_crash_leaves_zeros_after_the_records_and_nothing_is_lost_or_called_torn(tmp_path):
    path = tmp_path / "t.log"
    crashed = TopicLog(path)  # never closed: what kill -9 leaves
    for i in range(20):
        crashed.append(f"r{i}".encode())
    assert path.stat().st_size > crashed._written
    reopened = TopicLog(path)
    assert reopened.truncated_bytes == 0 and len(reopened) == 20
    assert path.stat().st_size == crashed._written  # the zeros are gone until the next write
    assert reopened.append(b"after").offset == 20
    assert [r.value for r in TopicLog(path).read(18, 5)] == [b"r18", b"r19", b"after"]


def test_a_record_torn_inside_the_grown_zeros_is_truncated(tmp_path):
    path = tmp_path / "t.log"
    crashed = TopicLog(path)
    for i in range(3):
        crashed.append(f"ok{i}".encode())
    torn = records.encode(records.Record(3, b"half written"))[:9]
    with open(path, "r+b") as f:
        f.seek(crashed._written)
        f.write(torn)
    reopened = TopicLog(path)
    assert reopened.truncated_bytes == len(torn.rstrip(b"\0"))
    assert [r.value for r in reopened.read(0, 10)] == [b"ok0", b"ok1", b"ok2"]


def test_records_across_many_growths_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(log_module, "GROW_MIN", 64)
    monkeypatch.setattr(log_module, "GROW_MAX", 1024)
    path = tmp_path / "t.log"
    log = TopicLog(path)
    sizes = []
    for i in range(60):
        log.append(f"v{i}".encode() * i)
        if path.stat().st_size not in sizes:
            sizes.append(path.stat().st_size)
        assert path.stat().st_size >= log._written
    steps = [b - a for a, b in zip(sizes, sizes[1:])]
    assert sizes[0] == 64 and steps[:3] == [64, 128, 256] and max(steps) == 1024  # doubling, up to GROW_MAX
    assert [r.value for r in TopicLog(path).read(0, 100)] == [f"v{i}".encode() * i for i in range(60)]


def test_a_file_system_that_cannot_preallocate_still_gets_every_record(tmp_path, monkeypatch):
    def refuse(fd, offset, length):
        raise OSError(95, "Operation not supported")
    monkeypatch.setattr(log_module.os, "posix_fallocate", refuse)
    path = tmp_path / "t.log"
    log = TopicLog(path)
    for i in range(5):
        log.append(f"r{i}".encode())
    assert path.stat().st_size == log._written  # appends change the size, as without growing
    log.close()
    reopened = TopicLog(path)
    assert reopened.truncated_bytes == 0 and [r.value for r in reopened.read(0, 9)] == [f"r{i}".encode() for i in range(5)]
