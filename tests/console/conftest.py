"""Real console nodes (and clusters around them) for the console's tests, always torn down.

* ``nodes`` starts node processes for one test; ``console_cluster`` is the browser tests'
  2-mesh cluster: mesh1 = broker, console (watching mesh2), gateway (watching mesh2);
  mesh2 = broker, registry. Every other node exports its spans to the console's
  ``/v1/traces``, whose port is chosen before any node starts; the console takes its own
  spans in-process.
* ``browser`` is headless Debian Chromium via Selenium (skipped, saying why, without it).
* ``running_up`` runs ``meshfabric up`` and yields the console URL it prints.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fabric import control
from fabric.launcher import NodeProcess
from tests.integration.conftest import wait_until
from tests.plugin.leftovers import command_lines

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def free_port() -> int:
    """A TCP port nothing listens on now (the tests run in their own network namespace)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def otlp_env(url: str) -> dict[str, str]:
    """The standard variables that make a node export to the console at ``url``."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": url.rstrip("/"), "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> Reply:
    """One HTTP request; 4xx and 5xx answers are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> re.Match:
    """Read ``up``'s stdout until a line matches ``pattern``; fail after ``timeout`` with what it said."""
    deadline, seen = time.monotonic() + timeout, b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
        found = re.search(pattern.encode(), seen)
        if found:
            return found
    raise AssertionError(f"`meshfabric up` never printed {pattern!r}; it said:\n{seen.decode(errors='replace')}")


def kill_leftovers(marker: str) -> list[int]:
    """SIGKILL any process whose command line names ``marker`` (this test's data dir); their pids."""
    found = []
    for pid, cmdline in command_lines():
        if marker.encode() in cmdline and pid != os.getpid():
            found.append(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


@contextmanager
def running_up(data_dir: Path, port: int, meshes: int = 2) -> Iterator[str]:
    """Run ``meshfabric up`` (in a namespace of its own when root); yield the console URL it prints.

    On the way out ``up`` gets SIGINT and stops its nodes and namespace; anything it leaves
    behind is killed and reported.
    """
    proc = subprocess.Popen([sys.executable, "-m", "fabric", "up", "--meshes", str(meshes), "--console-port",
                             str(port), "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield read_until(proc, r"console:\s+(http://\S+)", 90).group(1).decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            subprocess.run(["ip", "netns", "del", f"meshfabric-up-{proc.pid}"], capture_output=True)
        proc.stdout.close()
        leftovers = kill_leftovers(str(data_dir))
        assert not leftovers, f"`meshfabric up` left node processes behind: {leftovers}"
        assert code == 0, f"`meshfabric up` exited with {code}"


def directory_names(node: NodeProcess) -> set[str]:
    return {e["name"] for e in control.request_sync(node.control_path, "directory")["entries"]}


class Nodes:
    """Starts node processes and stops every one of them in ``close()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[NodeProcess] = []

    def start(self, mesh: str, type: str, bootstrap: list[str] = (), watch: list[str] = (),
              extra: list[str] = (), env: dict[str, str] | None = None) -> NodeProcess:
        node = NodeProcess(mesh, type, self.root / f"{mesh}-{type}-{len(self.started)}", bootstrap, watch,
                           env=env, extra=list(extra))
        self.started.append(node)
        node.start().wait_ready(timeout=20)
        return node

    def close(self) -> None:
        """Stop every node, consoles last (so the others' final exports still reach them)."""
        for node in sorted(reversed(self.started), key=lambda n: n.type == "console"):
            node.stop()
        leftover = [n.pid for n in self.started if n.alive()]
        assert not leftover, f"node processes survived teardown: {leftover}"


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.close()


@dataclass
class ConsoleCluster:
    url: str
    b1: NodeProcess
    b2: NodeProcess
    console: NodeProcess
    gateway: NodeProcess
    registry: NodeProcess

    @property
    def all(self) -> list[NodeProcess]:
        return [self.b1, self.b2, self.console, self.gateway, self.registry]


@pytest.fixture(scope="module")
def console_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleCluster]:
    started = Nodes(tmp_path_factory.mktemp("cluster"))
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        env = otlp_env(url)
        # The brokers start before the console listens: their exporters retry until it does.
        b1 = started.start("mesh1", "broker", env=env)
        b2 = started.start("mesh2", "broker", env=env)
        # The console takes its own spans in-process (it does not export to itself).
        console = started.start("mesh1", "console", [b1.address, b2.address], ["mesh2"],
                                ["--console-port", str(port)])
        assert console.info["console"] == url
        gateway = started.start("mesh1", "gateway", [b1.address, b2.address], ["mesh2"], env=env)
        registry = started.start("mesh2", "registry", [b2.address], env=env)
        cluster = ConsoleCluster(url, b1, b2, console, gateway, registry)
        names = {n.name for n in cluster.all}
        wait_until(lambda: directory_names(console) == names, 15, "the console to see all five nodes")
        wait_until(lambda: b2.name in directory_names(gateway), 15, "the gateway to see mesh2's broker")
        yield cluster
    finally:
        started.close()


def chromium(profile: str, width: int = 1440, height: int = 900) -> Any:
    """A headless Debian Chromium driven by Debian's chromedriver, with its profile in ``profile``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium in a fresh profile, quit and removed however the tests end."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)")
    pytest.importorskip("selenium.webdriver", reason="browser tests need selenium (pip install selenium)")
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    driver = None
    try:
        driver = chromium(profile)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
