"""The produce floor's parts: commits of 100 B, timed one at a time, back to back or each after
a raw round trip (the rhythm of sequential produces)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.raw_echo import Commits, RawEcho, fsyncs


def test_appends_grow_the_file_by_each_commit(tmp_path: Path):
    samples = fsyncs(tmp_path, 5)
    assert len(samples) == 5 and all(s > 0 for s in samples)
    assert (tmp_path / "fsync.bin").read_bytes() == b"r" * 500


def test_commits_into_a_grown_file_write_inside_its_size(tmp_path: Path):
    with Commits(tmp_path / "grown.bin", 8, grown=True) as commits:
        samples = [commits.one() for _ in range(8)]
    assert len(samples) == 8 and all(s > 0 for s in samples)
    assert (tmp_path / "grown.bin").read_bytes() == b"r" * 800  # grown for all 8 first: the size never moved
    with Commits(tmp_path / "partly.bin", 8, grown=True) as commits:
        commits.one()
    assert (tmp_path / "partly.bin").read_bytes() == b"r" * 100 + b"\0" * 700


def test_commits_close_their_file(tmp_path: Path):
    with Commits(tmp_path / "c.bin", 1) as commits:
        fd = commits._fd
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.asyncio
async def test_in_rhythm_each_commit_follows_a_round_trip(tmp_path: Path):
    calls: list[str] = []

    class Counted(Commits):
        def one(self) -> float:
            calls.append("commit")
            return super().one()

    async with RawEcho() as echo:
        real = echo.send.write_all

        async def write_all(data: bytes) -> None:
            calls.append("round trip")
            await real(data)

        echo.send.write_all = write_all  # type: ignore[method-assign]
        with Counted(tmp_path / "r.bin", 4) as commits:
            round_trips, committed = await echo.in_rhythm(commits, 4)
    assert calls == ["round trip", "commit"] * 4
    assert len(round_trips) == len(committed) == 4 and all(s > 0 for s in round_trips + committed)
    assert (tmp_path / "r.bin").read_bytes() == b"r" * 400
