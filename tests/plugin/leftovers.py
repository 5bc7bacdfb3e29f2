"""What a pytest run of the plugin could leave behind: node processes, namespaces, links, temp dirs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_NAMESPACE_PID = re.compile(r"^mf-[^-]+-(\d+)-")


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout.strip()
    return {ns["name"] for ns in json.loads(out)} if out else set()


def links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def command_lines() -> Iterator[tuple[int, bytes]]:
    """``(pid, command line)`` of every live process: its arguments NUL-separated, or one string
    (a forked node's title)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            yield int(proc.name), (proc / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue


def node_processes(under: Path) -> list[int]:
    """Pids of `meshfabric node` processes whose data dir is under ``under``."""
    found = []
    for pid, cmdline in command_lines():
        words = cmdline.replace(b"\0", b" ").split()
        if b"fabric" in words and b"node" in words and str(under).encode() in cmdline:
            found.append(pid)
    return found


@dataclass
class Baseline:
    """The machine's state before a run, to compare with after it."""

    tmpdir: Path
    namespaces: set[str]
    links: set[str]

    @classmethod
    def take(cls, tmpdir: Path) -> Baseline:
        return cls(tmpdir, namespaces(), links())

    def leftovers(self) -> list[str]:
        """Everything a finished run left: empty when it cleaned up."""
        found = [f"node process {pid}" for pid in node_processes(self.tmpdir)]
        found += [f"temp entry {p}" for p in sorted(self.tmpdir.iterdir())]
        for ns in sorted(namespaces() - self.namespaces):
            match = _NAMESPACE_PID.match(ns)
            if match and not alive(int(match[1])):  # a live pid: another run, still going
                found.append(f"network namespace {ns}")
        found += [f"link {name}" for name in sorted(links() - self.links) if name.startswith("mf")]
        return found


def gone(pids: list[int], namespaces_: list[str], paths: list[str]) -> list[str]:
    """Which of these recorded things still exist."""
    left = [f"process {pid}" for pid in pids if alive(pid)]
    current = namespaces()
    left += [f"namespace {ns}" for ns in namespaces_ if ns in current]
    left += [f"path {p}" for p in paths if os.path.exists(p)]
    return left
