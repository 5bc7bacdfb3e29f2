"""The ``meshfabric`` pytest plugin (a ``pytest11`` entry point): options, markers, fixtures, hooks.

Fixtures: ``fabric`` (a running cluster), ``fabric_factory`` (more clusters and nodes),
``spans`` (what the current test captured), ``fabric_client`` / ``fabric_client_sync``
(a client bound to the cluster), ``trace_snapshot`` (trace-shape snapshot gate),
``fabric_settings``, ``nemesis`` (faults: :mod:`pytest_meshfabric.nemesis`). Options and ini names: see :mod:`pytest_meshfabric.settings` or
``pytest --help``. The work happens in the modules this one wires together.
"""

from __future__ import annotations

import inspect
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from fabric import FabricClient
from fabric.errors import ConfigError

from . import reporting
from .backends import resolve_backend_name
from .client import SyncFabricClient, connect_client
from .cluster import Cluster
from .factory import FabricFactory
from .nemesis import nemesis, report_section as nemesis_report_section  # noqa: F401 - the `nemesis` fixture
from .session import ClusterPool, FabricSession
from .settings import FabricSettings, add_options
from .shapes import Shape
from .snapshots import SnapshotGate
from .spanview import SpanView
from .traces import Trace

SESSION = pytest.StashKey[FabricSession]()
OWNS_SIGTERM = pytest.StashKey[bool]()
MARKER = ("fabric(meshes=1, types=['broker', ...], node_args=[...]): run this test on its own cluster of "
          "that spec (the `fabric` fixture); unspecified keys come from --mesh-count / --fabric-types; "
          "cross_mesh='backbone': gateways and consoles see other meshes only through the backbone")


# -- configuration -----------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    config.stash[SESSION] = FabricSession(FabricSettings.from_config(config))
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)  # SIGTERM tears clusters down like Ctrl-C does
        config.stash[OWNS_SIGTERM] = True


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION, None)
    if session is not None:
        session.close()  # a no-op when the fixtures' teardown already did it
    if config.stash.get(OWNS_SIGTERM, False):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = _session(config).settings
    name, notice = resolve_backend_name(settings.backend)
    lines = [f"meshfabric: backend {name}, {settings.mesh_count} mesh(es) of {','.join(settings.types)}, "
             f"fabric scope {settings.scope}"]
    return lines + ([notice] if notice else [])


def _session(config: pytest.Config) -> FabricSession:
    return config.stash[SESSION]


def _pool_scope(fixture_name: str, config: pytest.Config) -> str:
    return _session(config).settings.scope


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def fabric_settings(pytestconfig: pytest.Config) -> FabricSettings:
    """The meshfabric settings in effect (command line over ini file over defaults)."""
    return _session(pytestconfig).settings


@pytest.fixture(scope="session")
def _fabric_session(pytestconfig: pytest.Config) -> Iterator[FabricSession]:
    session = _session(pytestconfig)
    yield session
    session.close()


@pytest.fixture(scope=_pool_scope)
def _fabric_pool(_fabric_session: FabricSession) -> Iterator[ClusterPool]:
    pool = ClusterPool(_fabric_session)
    yield pool
    pool.close()


@pytest.fixture
def fabric(request: pytest.FixtureRequest, _fabric_pool: ClusterPool) -> Cluster:
    """A running cluster of real node processes, ready: every node's boot trace captured and
    every directory converged. ``--mesh-count`` meshes (mesh1..meshN) of ``--fabric-types``
    nodes; ``@pytest.mark.fabric(meshes=2, types=[...])`` asks for another spec. Shared by
    the tests of the ``fabric_scope`` ini scope (default: session); a node a test killed or
    paused is brought back before the next test. ``fabric["mesh1"]["gateway"]`` is a
    ``NodeHandle`` (kill, restart, pause, directory, log_tail ...)."""
    try:
        spec = _session(request.config).settings.cluster_spec(request.node.get_closest_marker("fabric"))
    except ConfigError as exc:
        pytest.fail(f"meshfabric: {exc}", pytrace=False)
    cluster = _fabric_pool.get(spec)
    reporting.involve(request.node, cluster)
    return cluster


@pytest.fixture
def fabric_factory(request: pytest.FixtureRequest, _fabric_session: FabricSession) -> Iterator[FabricFactory]:
    """Start more clusters, ``fabric_factory(meshes=2, types=[...])``, or single nodes,
    ``fabric_factory.node("mesh1", "broker", join=fabric)``, inside a test; each is ready when
    returned and stopped when the test ends."""
    factory = FabricFactory(_fabric_session, lambda cluster: reporting.involve(request.node, cluster))
    yield factory
    factory.close()


@pytest.fixture
def spans(_fabric_session: FabricSession) -> SpanView:
    """The spans captured while the current test function runs (set-up excluded), with waits
    (``wait_for_trace``, ``wait_for``, ``wait_quiescent`` and async ``await_*``) and trace
    queries (``traces(root=..., service="mesh1.gateway.*")``); ``spans.session`` sees every
    span of the run, boot traces of shared clusters included."""
    return SpanView(_fabric_session.store, _fabric_session.store.mark())


@pytest_asyncio.fixture
async def fabric_client(request: pytest.FixtureRequest) -> AsyncIterator[FabricClient]:
    """A ``fabric.FabricClient`` connected to the ``fabric`` cluster through mesh1's gateway,
    exporting its spans to the plugin's receiver; for ``async def`` tests (pytest-asyncio).
    Sync tests use ``fabric_client_sync``."""
    if not inspect.iscoroutinefunction(getattr(request, "function", None)):
        pytest.fail(f"meshfabric: {request.node.name} is not an async test, but fabric_client is an asyncio "
                    "client; use the fabric_client_sync fixture in sync tests, or make the test "
                    "`async def` with @pytest.mark.asyncio", pytrace=False)
    cluster: Cluster = request.getfixturevalue("fabric")
    client = await connect_client(cluster)
    yield client
    await client.close()


@pytest.fixture
def fabric_client_sync(fabric: Cluster) -> Iterator[SyncFabricClient]:
    """A blocking client for sync tests: ``fabric_client_sync.produce("orders", b"x", to="mesh2.broker")``,
    ``.fetch(...)``, ``.resolve(...)`` (a ``FabricClient`` on a background event loop)."""
    client = SyncFabricClient(fabric)
    yield client
    client.close()


@pytest.fixture
def trace_snapshot(request: pytest.FixtureRequest, fabric_settings: FabricSettings) -> SnapshotGate:
    """``trace_snapshot(trace)`` compares the trace's normalised shape with
    ``__trace_snapshots__/<module>.<test>.yaml`` next to the test (a second snapshot in the
    same test: ``trace_snapshot(trace, "name")``); ``--trace-snapshot-update`` rewrites it.
    A missing snapshot is written, or fails when the ``CI`` variable is set."""
    return SnapshotGate(request.path, request.node.name, update=fabric_settings.snapshot_update)


# -- hooks -------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    reporting.begin_test(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    view = getattr(item, "funcargs", {}).get("spans")
    if isinstance(view, SpanView):
        view.restart()  # `spans` holds what the test function itself caused


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    faults = nemesis_report_section(item) if report.when == "call" else None
    if faults:
        report.sections.append(faults)
    if report.failed:
        reporting.on_failure(item, report, _session(item.config))
    return report


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: object, right: object) -> list[str] | None:
    """``assert trace == shape``: the expected and actual trees side by side."""
    if op != "==":
        return None
    trace, spec = (left, right) if isinstance(left, Trace) else (right, left)
    if not isinstance(trace, Trace) or not isinstance(spec, (Shape, dict)):
        return None
    result = trace.matches(spec)  # notes the failure: the report gets the full diff, untruncated
    if result:
        return None
    summary = "the trace does not have the expected shape (whole diff: section 'meshfabric: trace check that failed')"
    return [summary, *result.explain().splitlines()]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = _session(config)
    if session.notice:
        terminalreporter.write_line(session.notice, yellow=True)
    if session.kept:
        terminalreporter.section("meshfabric: clusters kept by --fabric-keep")
        terminalreporter.write_line(session.keep_notice())

