"""The console in a real headless Chromium, against a real 2-mesh cluster of node processes.

The page is read through small ``execute_script`` snapshots (the Cache table re-renders on
every pushed update, so element handles would go stale) and every wait is a condition with a
deadline. Set ``CONSOLE_SCREENSHOTS=DIR`` to also save a PNG of each view.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from fabric import BOOT_STEPS, control
from fabric.client import FabricClient
from tests.console.conftest import otlp_env
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.slow

CACHE_ROWS = """
return [...document.querySelectorAll('#cache-rows tr')].map(tr => ({
  name: tr.dataset.name, cells: [...tr.cells].map(td => td.textContent.trim())}));
"""
UPDATED = """
const u = document.getElementById('cache-updated');
return [u.textContent, Number(u.dataset.seq)];
"""
TOPOLOGY = """
return {
  lanes: [...document.querySelectorAll('#lanes .lane')].map(l => ({
    mesh: l.dataset.mesh, nodes: [...l.querySelectorAll('.node-card')].map(c => c.dataset.name)})),
  edges: [...document.querySelectorAll('#topology-edges path.edge')].map(p => ({
    from: p.dataset.from, to: p.dataset.to, cross: p.classList.contains('cross-mesh'),
    length: p.getTotalLength()})),
};
"""
WATERFALL = """
return [...document.querySelectorAll('#waterfall .wf-row')].map(r => ({
  span: r.dataset.spanId, parent: r.dataset.parentId, depth: Number(r.dataset.depth), name: r.dataset.name,
  service: r.dataset.service, bar: r.querySelector('.wf-bar').getBoundingClientRect().width,
  duration: r.querySelector('.wf-dur').textContent}));
"""


def screenshot(browser, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def open_view(browser, url: str, view: str) -> None:
    browser.get(f"{url}#{view}")
    wait_until(lambda: browser.execute_script(f"return !document.getElementById('view-{view}').hidden"),
               10, f"the {view} view to show")


def test_cache_rows_match_the_console_nodes_directory(console_cluster, browser):
    cluster = console_cluster
    open_view(browser, cluster.url, "cache")

    def rows_match_directory():
        directory = control.request_sync(cluster.console.control_path, "directory")["entries"]
        rows = {row["name"]: row["cells"] for row in browser.execute_script(CACHE_ROWS)}
        want = {e["name"]: [e["mesh"], e["type"], ", ".join(e["addrs"]), e["id_prefix"]] for e in directory}
        got = {name: [cells[1], cells[2], cells[3], cells[4]] for name, cells in rows.items()}
        states_ok = all(cells[5] in ("alive", "suspect") for cells in rows.values())
        return (got == want and states_ok, got, want)

    matched = wait_until(lambda: rows_match_directory()[0], 15, "the Cache rows to match the directory")
    assert matched
    rows = browser.execute_script(CACHE_ROWS)
    assert {r["name"] for r in rows} == {n.name for n in cluster.all}
    assert {r["cells"][1] for r in rows} == {"mesh1", "mesh2"}
    console_row = next(r for r in rows if r["name"] == cluster.console.name)
    assert "this node" in console_row["cells"][0].lower()
    screenshot(browser, "cache")


def test_updated_age_stays_live_without_reloading(console_cluster, browser):
    open_view(browser, console_cluster.url, "cache")
    wait_until(lambda: browser.execute_script(UPDATED)[1] > 0, 10, "the first pushed update")
    browser.execute_script("window.__sameDocument = true")

    def age(text: str) -> float:
        found = re.fullmatch(r"updated (\d+\.\d)s ago", text)
        assert found, f"unexpected 'updated' text {text!r}"
        return float(found.group(1))

    first_text, first_seq = browser.execute_script(UPDATED)
    assert age(first_text) < 2.0
    # Several more pushes must arrive (server-sent events), and the age must stay fresh.
    wait_until(lambda: browser.execute_script(UPDATED)[1] >= first_seq + 3, 10, "three more pushed updates")
    second_text, second_seq = browser.execute_script(UPDATED)
    assert age(second_text) < 2.0
    assert second_seq > first_seq
    assert browser.execute_script("return window.__sameDocument === true"), "the page was reloaded"


def test_topology_has_two_lanes_and_a_cross_mesh_edge_after_a_cross_mesh_produce(console_cluster, browser,
                                                                                    monkeypatch):
    cluster = console_cluster
    for key, value in otlp_env(cluster.url).items():
        monkeypatch.setenv(key, value)

    async def produce() -> dict:
        async with await FabricClient.connect(cluster.gateway.address, service_name="test-writer") as client:
            return await client.produce("orders", b"x", to="mesh2.broker")

    ack = asyncio.run(produce())
    assert ack["broker"] == cluster.b2.name

    open_view(browser, cluster.url, "topology")

    def cross_edge():
        view = browser.execute_script(TOPOLOGY)
        edges = [e for e in view["edges"] if e["from"] == cluster.gateway.name and e["to"] == cluster.b2.name]
        return view if edges and edges[0]["cross"] and edges[0]["length"] > 0 else None

    view = wait_until(cross_edge, 15, "the gateway → mesh2 broker edge")
    lanes = {lane["mesh"]: set(lane["nodes"]) for lane in view["lanes"]}
    assert list(lanes) == ["mesh1", "mesh2"]
    assert lanes["mesh1"] == {cluster.b1.name, cluster.console.name, cluster.gateway.name}
    assert lanes["mesh2"] == {cluster.b2.name, cluster.registry.name}
    # Edges join nodes directly: no card stands between the meshes.
    assert all(e["from"] in lanes["mesh1"] | lanes["mesh2"] and e["to"] in lanes["mesh1"] | lanes["mesh2"]
               for e in view["edges"])
    screenshot(browser, "topology")


def test_a_boot_trace_opens_as_a_waterfall_with_the_five_steps(console_cluster, browser):
    gateway = console_cluster.gateway
    open_view(browser, console_cluster.url, "traces")
    from selenium.webdriver.common.by import By

    browser.find_element(By.NAME, "service").send_keys(gateway.name)
    browser.find_element(By.NAME, "name").send_keys("mesh.node.ready")
    browser.find_element(By.CSS_SELECTOR, "#trace-search button").click()
    pick = (f'.trace-item[data-root-name="mesh.node.ready"][data-root-service="{gateway.name}"]')
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, pick), 15, "the gateway's boot trace in the list")
    browser.find_element(By.CSS_SELECTOR, pick).click()

    rows = wait_until(lambda: browser.execute_script(WATERFALL), 10, "the waterfall rows")
    root = rows[0]
    assert (root["name"], root["depth"], root["service"]) == ("mesh.node.ready", 0, gateway.name)
    steps = [r for r in rows if r["parent"] == root["span"]]
    assert [s["name"] for s in steps] == list(BOOT_STEPS)
    assert all(s["depth"] == 1 and s["bar"] >= 1 for s in steps)
    assert all(re.fullmatch(r"[\d.]+ (ns|µs|ms|s)", r["duration"]) for r in rows)
    assert root["bar"] > max(s["bar"] for s in steps) * 0.99

    # A row opens its attributes, Jaeger-style.
    browser.find_element(By.CSS_SELECTOR, f'.wf-row[data-span-id="{steps[1]["span"]}"]').click()
    detail = wait_until(lambda: browser.execute_script(
        "const d = document.querySelector('#waterfall .wf-detail'); return d && d.textContent"), 5, "span details")
    assert "net.addresses" in detail and gateway.info["node_id"] in detail
    screenshot(browser, "traces")
