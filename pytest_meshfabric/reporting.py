"""What a failing test's report gets: node log tails, trace diffs, artifacts, and kept clusters.

Fixtures record the clusters a test involved (:func:`involve`); when the test fails,
:func:`on_failure` adds report sections (shown under the failure, also with pytest-xdist)
and writes the artifacts folder ``<artifacts>/<test id>/``: noted traces as text and Jaeger
JSON, and a copy of every involved node's log.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from . import artifacts
from .cluster import Cluster
from .session import FabricSession

CLUSTERS = pytest.StashKey[list[Cluster]]()
REPORTED = pytest.StashKey[bool]()


def begin_test(item: pytest.Item) -> None:
    """Start a test with nothing involved and nothing noted."""
    item.stash[CLUSTERS] = []
    artifacts.begin_test()


def involve(item: pytest.Item, cluster: Cluster) -> None:
    """Record that ``item`` uses ``cluster`` (its logs go into the report if the test fails)."""
    clusters = item.stash.setdefault(CLUSTERS, [])
    if all(c is not cluster for c in clusters):
        clusters.append(cluster)


def artifacts_dir(config: pytest.Config, session: FabricSession) -> Path:
    """``--fabric-artifacts``, else ``meshfabric-artifacts`` in pytest's base temp dir."""
    if session.settings.artifacts is not None:
        return session.settings.artifacts
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's tmp_path_factory, before fixtures run
    base = factory.getbasetemp() if factory is not None else Path(tempfile.gettempdir())
    return base / "meshfabric-artifacts"


def on_failure(item: pytest.Item, report: pytest.TestReport, session: FabricSession) -> None:
    """Add the failure sections to ``report`` (once per test) and write its artifacts."""
    if item.stash.get(REPORTED, False):
        return
    item.stash[REPORTED] = True
    clusters = item.stash.get(CLUSTERS, [])
    folder = artifacts_dir(item.config, session) / artifacts.safe_name(item.nodeid)
    written = []
    for _, explanation in artifacts.noted():
        report.sections.append(("meshfabric: trace check that failed", explanation))
    written += artifacts.write_noted(folder)
    lines = session.settings.log_lines
    for cluster in clusters:
        report.sections.append((f"meshfabric: node logs of cluster {cluster.label} (last {lines} lines each)",
                                cluster.log_tails(lines)))
        written += _copy_logs(cluster, folder / "logs" / cluster.label)
    if written:
        report.sections.append(("meshfabric: artifacts", "\n".join(str(p) for p in written)))
    if session.settings.keep and clusters:
        for cluster in clusters:
            cluster.keep()
        notice = "\n".join(c.describe() for c in clusters)
        report.sections.append(("meshfabric: kept running (--fabric-keep)",
                                f"{notice}\nafter the run, remove them with: sh {session.cleanup_script()}"))


def _copy_logs(cluster: Cluster, folder: Path) -> list[Path]:
    copied = []
    for node in cluster.nodes:
        if node.log_path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{artifacts.safe_name(node.data_dir.name + '_' + node.name)}.log"
            shutil.copyfile(node.log_path, target)
            copied.append(target)
    return copied
