"""The plugin's options, ini settings, marker, fixture docs and misuse errors (pytester, no clusters)."""

from __future__ import annotations

import json
import os

import pytest

from pytest_meshfabric.backends import netns
from pytest_meshfabric.settings import SETTINGS

# The inner runs have no ini file, so pytest-asyncio warns about its loop scope setting.
pytestmark = pytest.mark.filterwarnings("ignore:The configuration option \"asyncio_default_fixture_loop_scope\"")

FLAGS = ["--mesh-count", "--fabric-types", "--fabric-backend", "--fabric-keep", "--fabric-artifacts",
         "--otlp-forward", "--trace-snapshot-update"]
FIXTURES = {
    "fabric": "A running cluster of real node processes, ready",
    "fabric_factory": "Start more clusters",
    "spans": "The spans captured while the current test function runs",
    "fabric_client": "A ``fabric.FabricClient`` connected to the ``fabric`` cluster",
    "fabric_client_sync": "A blocking client for sync tests",
    "trace_snapshot": "compares the trace's normalised shape",
    "fabric_settings": "The meshfabric settings in effect",
}

DUMP_SETTINGS = """
import dataclasses, json, os, pathlib

def test_dump(fabric_settings):
    values = {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in dataclasses.asdict(fabric_settings).items()}
    pathlib.Path(os.environ["MF_DUMP"]).write_text(json.dumps(values))
"""


@pytest.fixture
def dump(pytester, monkeypatch, tmp_path):
    """Run pytest in-process with ``args``; return the settings the test saw."""
    pytester.makepyfile(test_dump=DUMP_SETTINGS)
    target = tmp_path / "settings.json"
    monkeypatch.setenv("MF_DUMP", str(target))

    def run(*args: str) -> dict:
        pytester.runpytest_inprocess("-p", "no:cacheprovider", *args).assert_outcomes(passed=1)
        return json.loads(target.read_text())

    return run


def test_help_lists_every_option_and_ini_name(pytester):
    out = pytester.runpytest_inprocess("--help").stdout.str()
    assert "meshfabric clusters and traces:" in out
    for name in FLAGS + [s.ini for s in SETTINGS]:
        assert name in out, name


def test_every_fixture_is_documented_and_internals_are_hidden(pytester):
    out = pytester.runpytest_inprocess("--fixtures").stdout.str()
    for name, doc in FIXTURES.items():
        assert f"\n{name} " in out or f"\n{name} [" in out, name
        assert " ".join(doc.split()) in " ".join(out.split()), name
    assert "_fabric_session" not in out and "_fabric_pool" not in out


def test_defaults(dump):
    assert dump() == {
        "mesh_count": 1, "types": ["broker", "gateway", "registry", "compute"], "backend": "auto", "keep": False,
        "artifacts": None, "otlp_forward": None, "snapshot_update": False, "scope": "session",
        "ready_timeout": 30.0, "log_lines": 15,
        "node_args": ["--heartbeat", "0.3", "--suspect-after", "1.0", "--remove-after", "2.0"],
        "otlp_protocol": "http/protobuf"}


def test_every_setting_can_come_from_the_ini_file_and_the_command_line_wins(pytester, dump):
    pytester.makeini("""
        [pytest]
        fabric_mesh_count = 3
        fabric_types = broker, registry
        fabric_backend = local
        fabric_keep = true
        fabric_artifacts = out/art
        otlp_forward = http://127.0.0.1:4318/v1/traces
        trace_snapshot_update = yes
        fabric_scope = module
        fabric_ready_timeout = 12.5
        fabric_log_lines = 7
        fabric_node_args = --heartbeat 0.2
        fabric_otlp_protocol = grpc
    """)
    from_ini = dump()
    assert from_ini == {
        "mesh_count": 3, "types": ["broker", "registry"], "backend": "local", "keep": True,
        "artifacts": str(pytester.path / "out" / "art"), "otlp_forward": "http://127.0.0.1:4318/v1/traces",
        "snapshot_update": True, "scope": "module", "ready_timeout": 12.5, "log_lines": 7,
        "node_args": ["--heartbeat", "0.2"], "otlp_protocol": "grpc"}
    from_cli = dump("--mesh-count", "2", "--fabric-types", "broker,gateway", "--fabric-backend", "netns",
                    "--fabric-artifacts", "cli-art", "--otlp-forward", "http://127.0.0.1:9/v1/traces")
    assert from_cli == {**from_ini, "mesh_count": 2, "types": ["broker", "gateway"], "backend": "netns",
                        "artifacts": str(pytester.path / "cli-art"), "otlp_forward": "http://127.0.0.1:9/v1/traces"}


@pytest.mark.parametrize("args, ini, message", [
    (["--mesh-count", "0"], "", "bad option --mesh-count: --mesh-count / fabric_mesh_count must be at least 1"),
    (["--mesh-count", "two"], "", "must be a whole number, not 'two'"),
    (["--fabric-types", "broker,bogus"], "", "unknown node type(s) 'bogus'; choose from broker, gateway"),
    (["--fabric-backend", "podman"], "", "must be one of auto, local, netns, docker, not 'podman'"),
    ([], "fabric_scope = forever", "bad ini value fabric_scope: the ini value fabric_scope must be one of session"),
    ([], "fabric_ready_timeout = -1", "fabric_ready_timeout must be positive"),
])
def test_bad_values_stop_the_run_with_a_message_that_names_them(pytester, args, ini, message):
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_the_marker_is_registered(pytester):
    out = pytester.runpytest_inprocess("--markers").stdout.str()
    assert "@pytest.mark.fabric(meshes=1, types=['broker', ...], node_args=[...]): run this test" in out
    pytester.makepyfile("""
        import pytest

        @pytest.mark.fabric(meshes=2)
        def test_marked():
            pass
    """)
    pytester.runpytest_inprocess("--strict-markers", "-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.parametrize("marker, message", [
    ("fabric(mesh=2)", "@pytest.mark.fabric got unknown argument(s) mesh; it takes meshes=N, types=[...]"),
    ("fabric(2)", "@pytest.mark.fabric takes keywords only"),
    ("fabric(types=['broker', 'gatway'])", "unknown node type(s) 'gatway'"),
])
def test_a_misused_marker_explains_itself_before_starting_anything(pytester, marker, message):
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.{marker}
        def test_marked(fabric):
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert message in result.stdout.str()


def test_fabric_client_in_a_sync_test_points_to_the_sync_client(pytester):
    pytester.makepyfile("""
        def test_sync(fabric_client):
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_sync is not an async test, but fabric_client is an asyncio client; "
                                 "use the fabric_client_sync fixture in sync tests*"])


def test_the_header_names_the_backend(pytester):
    result = pytester.runpytest_inprocess("--fabric-backend", "local", "--mesh-count", "2")
    result.stdout.fnmatch_lines(["meshfabric: backend local, 2 mesh(es) of broker,gateway,registry,compute, "
                                 "fabric scope session"])
    if os.geteuid() == 0 and netns.unavailable_reason() is None:
        pytester.runpytest_inprocess().stdout.fnmatch_lines(["meshfabric: backend netns, *"])


def test_without_namespaces_auto_falls_back_to_local_and_says_which_faults_are_lost(pytester, monkeypatch):
    monkeypatch.setattr(netns, "unavailable_reason", lambda: "the tests do not run as root")
    result = pytester.runpytest_inprocess()
    result.stdout.fnmatch_lines([
        "meshfabric: backend local, *",
        "meshfabric: nodes run on 127.0.0.1 (local backend) because the tests do not run as root; "
        "unavailable faults: partition, isolate, loss, latency*"])
