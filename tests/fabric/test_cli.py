"""The ``meshfabric`` command refuses bad configuration with a clear message and exit code.

Real processes (``python -m fabric``); every case fails before the node binds an endpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.identity import NODE_TYPES

EXIT_BOOT, EXIT_CONFIG = 1, 2
TIMEOUT = 30


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The parent's environment without meshfabric or OTEL settings, state under tmp_path."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MESHFABRIC_", "OTEL_"))}
    clean["XDG_STATE_HOME"] = str(tmp_path / "state")
    return clean


def meshfabric(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fabric", *args], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def assert_did_not_boot(result: subprocess.CompletedProcess[str]) -> None:
    assert '"event": "ready"' not in result.stdout
    assert "Traceback" not in result.stderr, result.stderr


def test_node_without_a_mesh_exits_2_naming_the_flag(env, tmp_path):
    data = tmp_path / "data"
    result = meshfabric(env, "node", "--type", "broker", "--data-dir", str(data))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "--mesh" in result.stderr
    assert "MESHFABRIC_MESH" in result.stderr
    assert_did_not_boot(result)
    assert not (data / "identity.key").exists()  # nothing was minted
    assert not (tmp_path / "state").exists()


def test_node_with_a_bad_mesh_label_exits_2(env, tmp_path):
    result = meshfabric(env, "node", "--mesh", "Mesh.1", "--type", "broker", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "'Mesh.1'" in result.stderr
    assert "--mesh" in result.stderr
    assert_did_not_boot(result)


def test_mesh_from_the_environment_is_used(env, tmp_path):
    # MESHFABRIC_MESH satisfies --mesh, so the error is now about the type
    env["MESHFABRIC_MESH"] = "mesh1"
    result = meshfabric(env, "node", "--type", "toaster", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "toaster" in result.stderr
    assert "--mesh" not in result.stderr


def test_node_with_an_unknown_type_exits_2_listing_the_valid_ones(env, tmp_path):
    result = meshfabric(env, "node", "--mesh", "mesh1", "--type", "toaster", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "'toaster'" in result.stderr
    for node_type in NODE_TYPES:
        assert node_type in result.stderr
    assert_did_not_boot(result)


def test_node_with_a_corrupt_identity_exits_1_and_keeps_the_file(env, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    key = data / "identity.key"
    key.write_bytes(b"\x01\x02\x03\x04\x05")
    result = meshfabric(env, "node", "--mesh", "mesh1", "--type", "broker", "--data-dir", str(data))
    assert result.returncode == EXIT_BOOT, result.stderr
    assert "identity file" in result.stderr
    assert str(key) in result.stderr
    assert "corrupt" in result.stderr
    assert "found 5 bytes" in result.stderr
    assert_did_not_boot(result)
    assert key.read_bytes() == b"\x01\x02\x03\x04\x05"
    assert not (data / "control.sock").exists()


def test_node_with_an_unreadable_identity_exits_1(env, tmp_path):
    data = tmp_path / "data"
    (data / "identity.key").mkdir(parents=True)  # a directory where the key file should be
    result = meshfabric(env, "node", "--mesh", "mesh1", "--type", "broker", "--data-dir", str(data))
    assert result.returncode == EXIT_BOOT, result.stderr
    assert "cannot read identity file" in result.stderr
    assert_did_not_boot(result)


@pytest.mark.parametrize("bootstrap", ["nonsense", "abc@127.0.0.1:1", f"{'a' * 64}@localhost:1", f"{'a' * 64}@"])
def test_node_with_a_bad_bootstrap_exits_2(env, tmp_path, bootstrap):
    data = tmp_path / "data"
    result = meshfabric(env, "node", "--mesh", "mesh1", "--type", "broker", "--data-dir", str(data),
                        "--bootstrap", bootstrap)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "bad peer address" in result.stderr
    assert repr(bootstrap) in result.stderr
    assert "<64-hex node id>@<ip:port>" in result.stderr
    assert_did_not_boot(result)
    assert not (data / "identity.key").exists()


def test_query_of_a_node_that_is_not_running_exits_1(env, tmp_path):
    result = meshfabric(env, "status", "--data-dir", str(tmp_path / "nobody"))
    assert result.returncode == EXIT_BOOT, result.stderr
    assert "no node answers" in result.stderr
    assert "Traceback" not in result.stderr


def test_node_with_a_bad_gc_threshold_exits_2_naming_the_variable(env, tmp_path):
    env["MESHFABRIC_GC_THRESHOLD"] = "lots"
    result = meshfabric(env, "node", "--mesh", "mesh1", "--type", "broker", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "MESHFABRIC_GC_THRESHOLD" in result.stderr and "'lots'" in result.stderr
    assert_did_not_boot(result)
