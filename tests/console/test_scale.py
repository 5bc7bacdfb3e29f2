"""Hundreds of nodes and thousands of spans do not freeze the page.

Spans go in the real way (OTLP to a console node); the directory of hundreds of nodes, which a
2-core test machine cannot run as processes, is handed to the page's own views as a snapshot
shaped exactly like the pushed one. Every render is timed inside the browser.
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.console.conftest import Nodes, http
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.slow

NODES_PER_MESH = 200
MESHES = 3
BIG_TRACE_SPANS = 1500
SMALL_TRACES = 2500
RENDER_BUDGET_MS = 1500  # generous for a loaded 2-core machine; a frozen page takes many seconds


@pytest.fixture(scope="module")
def loaded_console(tmp_path_factory):
    """A console node holding one 1,500-span trace and 2,500 small ones, sent by the real SDK."""
    started = Nodes(tmp_path_factory.mktemp("scale"))
    try:
        console = started.start("mesh1", "console")
        url = console.info["console"]
        provider = TracerProvider(resource=Resource.create({"service.name": "mesh1.gateway.abcdef", "mesh.id": "mesh1"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "v1/traces"),
                                                       max_queue_size=10_000, max_export_batch_size=512))
        tracer = provider.get_tracer("scale")
        with tracer.start_as_current_span("big batch") as big:
            for i in range(BIG_TRACE_SPANS - 1):
                with tracer.start_as_current_span(f"step {i}"):
                    pass
        for i in range(SMALL_TRACES):
            with tracer.start_as_current_span("writer.produce"):
                pass
        provider.force_flush(30_000)
        provider.shutdown()
        big_id = format(big.get_span_context().trace_id, "032x")
        wait_until(lambda: http("GET", url + "api/status").json()["console"]["traces"] >= SMALL_TRACES + 1, 30,
                   "every trace at the console")
        yield url, big_id
    finally:
        started.close()


FAKE_DIRECTORY = """
const [meshes, perMesh] = arguments;
const types = ['broker', 'gateway', 'registry', 'compute'];
const entries = [];
for (let m = 1; m <= meshes; m++) for (let i = 0; i < perMesh; i++) {
  const hex = (m * 4096 + i).toString(16).padStart(6, '0');
  entries.push({name: `mesh${m}.${types[i % 4]}.${hex}`, mesh: `mesh${m}`, type: types[i % 4], node_id: hex.repeat(10),
                id_prefix: hex, addrs: [`127.0.0.1:${20000 + i}`], state: i % 17 ? 'alive' : 'suspect',
                last_heard_s: 0.2, incarnation: 1, heartbeat: 1, meta: {}});
}
return entries;
"""


def test_hundreds_of_nodes_render_paged_and_fast(loaded_console, browser):
    url, _ = loaded_console
    browser.get(url + "#cache")
    wait_until(lambda: browser.execute_script("return !!window.meshfabricConsole.state.snapshot"), 10, "a snapshot")
    timing = browser.execute_script(f"""
        const entries = (function() {{ {FAKE_DIRECTORY} }})({MESHES}, {NODES_PER_MESH});
        const {{views, state}} = window.meshfabricConsole;
        const snapshot = {{...state.snapshot, directory: entries}};
        let t = performance.now();
        views.cache.update(snapshot, true);
        const cache = performance.now() - t;
        const rows = document.querySelectorAll('#cache-rows tr').length;
        const pager = document.getElementById('cache-pager').textContent;
        const lanes = [1, 2, 3].map(m => ({{mesh: 'mesh' + m, nodes: entries.filter(e => e.mesh === 'mesh' + m)
            .map(e => ({{...e, self: false}}))}}));
        const edges = entries.slice(0, 300).map((e, i) => ({{source: e.name, target: entries[(i * 7 + 250) % entries.length].name,
            count: i + 1, kinds: {{'PRODUCER→CONSUMER': i + 1}}, cross_mesh: true}}));
        document.getElementById('view-topology').hidden = false;
        views.topology.visible = true;
        views.topology.data = {{lanes, edges, external: [], edges_version: 0}};
        t = performance.now();
        views.topology.render();
        views.topology.drawEdges();
        const topology = performance.now() - t;
        return {{cache, rows, pager, topology, cards: document.querySelectorAll('.node-card').length,
                 paths: document.querySelectorAll('#topology-edges path.edge').length}};
    """)
    assert timing["rows"] == 100 and "1–100 of 600" in timing["pager"], timing
    assert timing["cards"] == MESHES * NODES_PER_MESH and timing["paths"] == 300, timing
    assert timing["cache"] < RENDER_BUDGET_MS and timing["topology"] < RENDER_BUDGET_MS, timing


def test_thousands_of_traces_page_and_a_big_trace_opens_fast(loaded_console, browser):
    url, big_id = loaded_console
    listing = http("GET", url + "api/traces?limit=50&offset=2000").json()
    assert listing["total"] >= SMALL_TRACES + 1 and len(listing["traces"]) == 50

    browser.get(url + "#traces")
    wait_until(lambda: browser.execute_script("return document.querySelectorAll('.trace-item').length") == 50, 15,
               "the first page of 50 traces")
    browser.execute_script("window.__t0 = performance.now(); location.hash = arguments[0]", f"#traces/{big_id}")
    rows = wait_until(lambda: browser.execute_script(
        "return document.querySelectorAll('#waterfall .wf-row').length"), 15, "the big trace's waterfall")
    elapsed = browser.execute_script("return performance.now() - window.__t0")
    assert rows == BIG_TRACE_SPANS
    assert elapsed < 5000, f"a {BIG_TRACE_SPANS}-span waterfall took {elapsed:.0f} ms to appear"
    depths = browser.execute_script("return [...document.querySelectorAll('.wf-row')].map(r => +r.dataset.depth)")
    assert depths[0] == 0 and set(depths[1:]) == {1}, "every step sits under the root"
