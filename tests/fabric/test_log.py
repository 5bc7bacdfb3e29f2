"""The broker's durable log: append/read, torn tails truncated at open, idempotent producers."""

from __future__ import annotations

import asyncio

import pytest

from fabric.errors import ConfigError
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


@pytest.mark.parametrize("tail", [b"\x00\x00", b"\x00\x00\x00\x10\x00\x00\x00\x00abc", None])
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


def test_log_finds_existing_topics_and_refuses_bad_names(tmp_path):
    log = Log(tmp_path / "log")
    log.topic("orders", create=True).append(b"x")
    assert log.topic("missing", create=False) is None
    log.close()
    again = Log(tmp_path / "log")
    assert set(again.topics) == {"orders"}
    for bad in ["../x", "", "a/b", ".hidden", "x" * 201, None, 3]:
        with pytest.raises(ConfigError):
            check_topic(bad)


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
