"""The broker's durable log: one append-only file per topic, on disk before an ack.

An acknowledged record survives ``kill -9``: a broker acknowledges a record only once
``sync_through`` has seen it fsynced. Concurrent produces share fsyncs (group commit): the
first waiter lets the loop turn once, then runs one ``fdatasync`` that covers everything written
so far, and everyone whose record it covers is released together. On open,
a torn tail left by a crash is detected (short record or bad checksum) and truncated, never
served. Retried produces with the same ``(producer_id, seq)`` are stored once.

The file grows ahead of its records (zeros that mark the end: ``records.scan`` stops at a zero
length), by as much as it holds, from ``GROW_MIN`` (a topic with few records stays small) to
``GROW_MAX`` bytes at a time, so an append seldom changes the file's size
and a commit is an ``fdatasync`` of data only: ~85 µs against ~120 µs for an append's fsync on
this machine's disk, which must also write the new size. A clean close cuts the zeros off.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import msgpack

from ..errors import ConfigError
from . import records
from .records import Record

_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_DEDUP_WINDOW = 4096  # (producer, seq) pairs remembered per topic, at least (up to twice as many)
GROW_MIN, GROW_MAX = 64 << 10, 4 << 20  # how far a topic's file grows ahead of its records at a time

#: TEST-ONLY planted bug for the chaos harness (tests/chaos/test_planted_bug.py): with
#: ``MESHFABRIC_UNSAFE_BUFFERED_WRITES=1`` a broker acknowledges records it has only buffered
#: in memory; they reach the file on the next fetch or a clean close, so ``kill -9`` loses
#: acknowledged records. Never set it outside tests.
UNSAFE_BUFFERED_ENV = "MESHFABRIC_UNSAFE_BUFFERED_WRITES"


_VALID_TOPICS: set[str] = set()  # names checked already: a produce checks its topic three times
_VALID_TOPICS_KEPT = 1024


def check_topic(name: object) -> str:
    if type(name) is str and name in _VALID_TOPICS:
        return name
    if not isinstance(name, str) or not _TOPIC.match(name) or ".." in name:
        raise ConfigError(f"invalid topic name {name!r}: use 1-200 letters, digits, '.', '_' or '-'")
    if len(_VALID_TOPICS) < _VALID_TOPICS_KEPT:
        _VALID_TOPICS.add(name)
    return name


class Appended(NamedTuple):
    """Where a written record is: its offset, and whether an earlier write stored it already."""

    offset: int
    duplicate: bool


class Written(NamedTuple):
    """Where each record of a batch is (``Appended`` for each, as two lists: what a broker answers)."""

    offsets: list[int]
    duplicates: list[bool]


class TopicLog:
    """One topic's file. Not thread-safe: a broker drives it from its event loop."""

    def __init__(self, path: Path, fsync: bool = True, unsafe_buffered: bool = False,
                 others_waiting: Callable[[], bool] = lambda: True) -> None:
        self.path = path
        self.fsync = fsync
        self.others_waiting = others_waiting  # see sync_through
        self.unsafe_buffered = unsafe_buffered  # test-only: see UNSAFE_BUFFERED_ENV
        self._pending = bytearray()
        self.truncated_bytes = 0
        data = path.read_bytes() if path.exists() else b""
        found, valid_end = records.scan_fields(data)
        if valid_end < len(data):
            # what a crash tore, not the zeros grown ahead of the records
            self.truncated_bytes = len(data[valid_end:].rstrip(b"\0"))
            with open(path, "r+b") as f:
                f.truncate(valid_end)
                os.fsync(f.fileno())
        self._positions: list[tuple[int, int]] = []  # offset -> (file position, size)
        self._dedup: dict[tuple[str, int], int] = {}  # in the order written
        pos = 0
        for (offset, _, _, _, _, producer_id, seq), size in found:
            self._positions.append((pos, size))
            pos += size
            if producer_id is not None and seq is not None:
                self._dedup[(producer_id, seq)] = offset
        self._forget_oldest()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._end = self._written = self._allocated = pos  # records' end, bytes in the file, file size
        self._durable = len(self._positions)  # records [0, _durable) are on disk for sure
        self._syncing: asyncio.Future[None] | None = None
        self._pack = msgpack.Packer(use_bin_type=True).pack  # this topic's records, on its loop's thread
        self.fsyncs = 0

    def __len__(self) -> int:
        return len(self._positions)

    def append(self, value: bytes, key: bytes | None = None, headers: dict[str, str] | None = None,
               producer_id: str | None = None, seq: int | None = None) -> Appended:
        """Append one record and fsync at once (for callers without an event loop)."""
        appended = self.write(value, key, headers, producer_id, seq)
        if self.fsync and self._durable <= appended.offset:
            self._commit()
        return appended

    def write(self, value: bytes, key: bytes | None = None, headers: dict[str, str] | None = None,
              producer_id: str | None = None, seq: int | None = None) -> Appended:
        """Append one record without waiting for the disk; a seen ``(producer_id, seq)`` is not
        stored again. Call ``sync_through(offset)`` before acknowledging it."""
        written = self.write_many([(value, key, headers or {})], producer_id, seq)
        return Appended(written.offsets[0], written.duplicates[0])

    def write_many(self, batch: list[tuple[bytes, bytes | None, dict[str, str]]],
                   producer_id: str | None = None, seq: int | None = None) -> Written:
        """Append records in one ``write`` (the i-th with sequence ``seq + i``), skipping seen ones.

        The records are encoded from their fields, with no ``Record`` or ``Appended`` made for
        each: a batch's records are the broker's busiest loop (~1.3 µs a ``Record`` warm)."""
        now_ms = time.time_ns() // 1_000_000
        offsets: list[int] = []
        duplicates: list[bool] = []
        fresh: list[bytes] = []
        seen: list[tuple[tuple[str, int], int]] = []  # (producer_id, seq) -> offset, to remember
        offset, dedup, pack = len(self._positions), self._dedup, self._pack
        for i, (value, key, headers) in enumerate(batch):
            record_seq = None if seq is None else seq + i
            if producer_id is not None and record_seq is not None:
                known = dedup.get((producer_id, record_seq))
                if known is not None:
                    offsets.append(known)
                    duplicates.append(True)
                    continue
                seen.append(((producer_id, record_seq), offset))
            fresh.append(records.encode_fields([offset, value, key, headers, now_ms, producer_id, record_seq], pack))
            offsets.append(offset)
            duplicates.append(False)
            offset += 1
        if fresh and self.unsafe_buffered:
            self._pending += b"".join(fresh)
        elif fresh:
            self._write(b"".join(fresh))
        for data in fresh:  # only once the bytes are in the file
            self._positions.append((self._end, len(data)))
            self._end += len(data)
        for pair, at in seen:
            dedup[pair] = at
        self._forget_oldest()
        return Written(offsets, duplicates)

    async def sync_through(self, offset: int) -> None:
        """Return once record ``offset`` is on disk, sharing each fsync with concurrent callers."""
        if not self.fsync or self.unsafe_buffered:
            return
        while self._durable <= offset:
            if self._syncing is not None:
                await asyncio.shield(self._syncing)
                continue
            self._syncing = asyncio.get_running_loop().create_future()
            try:
                # One loop turn first if other requests are read and waiting to be handled, so
                # their records join this fsync (group commit); none for a lone record. Then
                # fsync on the loop: a worker thread's two hand-offs cost ~80 µs per commit
                # (~0.26 vs ~0.18 ms a lone commit here), more than the stall they avoid.
                if self.others_waiting():
                    await asyncio.sleep(0)
                self._commit()
            finally:
                released, self._syncing = self._syncing, None
                released.set_result(None)

    def _commit(self) -> None:
        """Make every record written so far durable with one ``fdatasync``: the data, and the
        file's size only after it grew (``_grow``)."""
        target = len(self._positions)
        os.fdatasync(self._fd)
        self.fsyncs += 1
        self._durable = max(self._durable, target)

    def read(self, offset: int, max_records: int) -> list[Record]:
        """Records from ``offset`` on, at most ``max_records``."""
        self._flush_pending()
        out: list[Record] = []
        for pos, size in self._positions[max(0, offset): max(0, offset) + max(0, max_records)]:
            found, _ = records.scan(os.pread(self._fd, size, pos))
            out.extend(found)
        return out

    def close(self) -> None:
        """Write what is pending and cut the zeros grown ahead of the records off."""
        self._flush_pending()
        if self._allocated != self._written:
            os.ftruncate(self._fd, self._written)
        os.close(self._fd)

    def _write(self, data: bytes) -> None:
        """Write ``data`` after the last record, growing the file first when it would not fit."""
        if self._written + len(data) > self._allocated:
            self._grow(self._written + len(data))
        view, at = memoryview(data), self._written
        while view:
            done = os.pwrite(self._fd, view, at)
            view, at = view[done:], at + done
        self._written = at

    def _grow(self, needed: int) -> None:
        """Make the file at least ``needed`` bytes, zeros past the records (the next commit's
        ``fdatasync`` writes the new size, once a chunk)."""
        size = max(needed, self._allocated + min(max(self._allocated, GROW_MIN), GROW_MAX))
        try:
            os.posix_fallocate(self._fd, self._allocated, size - self._allocated)
        except OSError:  # a file system that cannot (or a full disk): appends change the size from now on
            self._allocated = sys.maxsize
            return
        self._allocated = size

    def _flush_pending(self) -> None:
        if self._pending:
            self._write(bytes(self._pending))
            self._pending.clear()

    def _forget_oldest(self) -> None:
        """Past twice ``_DEDUP_WINDOW`` ``(producer_id, seq)`` pairs, keep the last ``_DEDUP_WINDOW``:
        once every ``_DEDUP_WINDOW`` records, not a pop for each."""
        if len(self._dedup) > 2 * _DEDUP_WINDOW:
            self._dedup = dict(list(self._dedup.items())[-_DEDUP_WINDOW:])


class Log:
    """Every topic of a broker, under ``<data_dir>/log/``."""

    def __init__(self, directory: Path, fsync: bool = True, unsafe_buffered: bool | None = None,
                 others_waiting: Callable[[], bool] = lambda: True) -> None:
        """``others_waiting``: whether requests are read and waiting to be handled, whose records
        a commit could take along (the broker's transport knows; by default a commit assumes so)."""
        self.directory = directory
        self.fsync = fsync
        self.others_waiting = others_waiting
        if unsafe_buffered is None:
            unsafe_buffered = os.environ.get(UNSAFE_BUFFERED_ENV) == "1"
        self.unsafe_buffered = unsafe_buffered
        try:
            names = os.listdir(directory)  # a restart: no mkdir, no glob (a boot pays for every µs)
        except FileNotFoundError:
            directory.mkdir(parents=True, exist_ok=True)
            names = []
        self.topics: dict[str, TopicLog] = {}
        for name in sorted(n for n in names if n.endswith(".log") and not n.startswith(".")):
            self.topics[name[:-4]] = TopicLog(directory / name, fsync, unsafe_buffered, others_waiting)

    def topic(self, name: str, create: bool) -> TopicLog | None:
        check_topic(name)
        log = self.topics.get(name)
        if log is None and create:
            log = self.topics[name] = TopicLog(self.directory / f"{name}.log", self.fsync, self.unsafe_buffered,
                                               self.others_waiting)
            _fsync_dir(self.directory)
        return log

    @property
    def truncated_bytes(self) -> int:
        return sum(t.truncated_bytes for t in self.topics.values())

    def close(self) -> None:
        for log in self.topics.values():
            log.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
