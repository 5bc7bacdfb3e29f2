"""``meshfabric up --meshes 2`` prints a console URL that works from where ``up`` runs.

As root, ``up`` puts the nodes in their own network namespace and forwards the host port to
the console's Unix socket; otherwise the console listens on the port itself. Either way the
printed URL must show the whole demo: nine nodes in two meshes, each one's boot trace.
"""

from __future__ import annotations

import pytest

from tests.console.conftest import free_port, http, running_up
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.slow


def test_up_prints_a_console_url_that_shows_the_whole_demo(tmp_path):
    port = free_port()
    with running_up(tmp_path / "up", port) as url:
        assert url == f"http://127.0.0.1:{port}/"
        assert http("GET", url + "api/status").json()["node"]["type"] == "console"

        def everyone_booted():
            booted = {t["root_service"] for t in
                      http("GET", url + "api/traces?name=mesh.node.ready&limit=50").json()["traces"]}
            known = {e["name"] for e in http("GET", url + "api/directory").json()["entries"]}
            return booted if len(known) == 9 and booted == known else None

        wait_until(everyone_booted, 30, "all nine nodes in the console's directory, each with its boot trace")
        lanes = http("GET", url + "api/topology").json()["lanes"]
        assert [(lane["mesh"], len(lane["nodes"])) for lane in lanes] == [("mesh1", 5), ("mesh2", 4)]
