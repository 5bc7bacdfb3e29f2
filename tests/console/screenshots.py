"""Regenerate the console screenshots in ``docs/`` from a live ``meshfabric up --meshes 2``.

    unshare -n sh -c 'ip link set lo up && python -m tests.console.screenshots docs'

Needs Debian's chromium and chromium-driver. Not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By

from tests.console.conftest import chromium, free_port, http, running_up
from tests.integration.conftest import wait_until


def settled(url: str) -> bool:
    """Nine nodes known, every boot trace in, and the writer's cross-mesh traffic drawn."""
    names = {e["name"] for e in http("GET", url + "api/directory").json()["entries"]}
    booted = {t["root_service"] for t in http("GET", url + "api/traces?name=mesh.node.ready&limit=50").json()["traces"]}
    edges = http("GET", url + "api/topology").json()["edges"]
    return len(names) == 9 and booted == names and len(edges) >= 4 and any(e["cross_mesh"] for e in edges)


def open_trace(driver, service: str, name: str, index: int = 0) -> None:
    """Search the Traces view and open the ``index``-th newest matching trace."""
    for field, value in (("service", service), ("name", name)):
        box = driver.find_element(By.NAME, field)
        box.clear()
        box.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#trace-search button").click()
    pick = f'.trace-item[data-root-name="{name}"]'
    wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, pick)) > index, 10, name)
    driver.find_elements(By.CSS_SELECTOR, pick)[index].click()
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#waterfall .wf-row"), 10, "the waterfall")


def capture(url: str, out: Path) -> None:
    profile = tempfile.mkdtemp(prefix="console-shots-")
    driver = chromium(profile, 1440, 980)
    try:
        driver.get(url + "#cache")
        wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#cache-rows tr")) == 9, 10, "nine rows")
        driver.save_screenshot(str(out / "console-cache.png"))

        driver.get(url + "#topology")
        wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "path.edge.cross-mesh")) >= 1, 10, "edges")
        driver.save_screenshot(str(out / "console-topology.png"))

        driver.get(url + "#traces")
        open_trace(driver, "mesh2.broker", "mesh.node.ready")
        driver.save_screenshot(str(out / "console-traces.png"))

        # The gateway's writer producing to mesh2, whose compute node carries the trace on: not
        # the newest one, so that every hop has had time to export its spans.
        open_trace(driver, "mesh1.gateway", "writer.produce", index=2)
        driver.set_window_size(1440, 1180)
        driver.find_elements(By.CSS_SELECTOR, ".wf-row")[-1].click()  # the last hop's attributes
        driver.save_screenshot(str(out / "console-trace-produce.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNGs (e.g. docs)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="console-shots-up-"))
    try:
        with running_up(data_dir / "up", free_port()) as url:
            wait_until(lambda: settled(url), 60, "the demo to settle", interval=0.5)
            capture(url, args.out)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
