// The Topology view: one swim-lane per mesh, a card per node coloured by type, and SVG edges
// drawn straight between the cards of nodes that talk (from /api/topology, read off spans).

import { api, el, typeChip, typeClass, TYPES } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const MIN_REFRESH_MS = 1000;
const DENSE_LANE = 10; // more nodes than this: the lane's cards flow into a grid

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function arrowMarker(id, colour) {
  return svg("marker", { id, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7",
                         orient: "auto-start-reverse" },
    svg("path", { d: "M0,0 L10,5 L0,10 z", fill: colour }));
}

function describe(edge) {
  const kinds = Object.entries(edge.kinds).map(([k, n]) => `${k} ×${n}`).join(", ");
  return `${edge.source} → ${edge.target}: ${edge.count} call${edge.count === 1 ? "" : "s"} (${kinds})`;
}

export class TopologyView {
  constructor() {
    this.container = document.getElementById("lanes");
    this.edgeLayer = document.getElementById("topology-edges");
    this.data = null;
    this.visible = false;
    this.membership = "";
    this.edgesVersion = -1;
    this.lastFetch = 0;
    this.fetching = false;
    new ResizeObserver(() => this.drawEdges()).observe(this.container);
    document.getElementById("topology-legend").append(
      el("div", { class: "types" }, TYPES.map(typeChip)),
      el("div", { class: "keys" },
        el("span", {}, el("i"), "calls within a mesh"),
        el("span", {}, el("i", { class: "cross" }), "cross-mesh calls")));
  }

  show(snapshot) {
    this.visible = true;
    this.refresh(true);
  }

  update(snapshot, visible) {
    this.visible = visible;
    if (!visible) return;
    const membership = snapshot.directory.map((e) => `${e.name}:${e.state}`).join(",");
    if (membership !== this.membership || snapshot.edges_version !== this.edgesVersion) {
      this.membership = membership;
      this.refresh(false);
    }
  }

  async refresh(force) {
    const now = performance.now();
    if (this.fetching || (!force && now - this.lastFetch < MIN_REFRESH_MS)) return;
    this.fetching = true;
    this.lastFetch = now;
    try {
      this.data = await api("/api/topology");
      this.edgesVersion = this.data.edges_version;
      this.render();
    } catch (error) {
      this.container.replaceChildren(this.edgeLayer, el("p", { class: "error", text: error.message }));
    } finally {
      this.fetching = false;
    }
  }

  render() {
    const lanes = this.data.lanes.map((lane) => el("section", {
      class: lane.nodes.length > DENSE_LANE ? "lane dense" : "lane", dataset: { mesh: lane.mesh } },
      el("div", { class: "lane-head" },
        el("h2", { text: lane.mesh || "(no mesh)" }),
        el("span", { text: `${lane.nodes.length} node${lane.nodes.length === 1 ? "" : "s"}` })),
      el("div", { class: "lane-nodes" }, lane.nodes.map((node) => this.card(node)))));
    this.container.replaceChildren(this.edgeLayer, ...lanes);
    const external = this.data.external;
    document.getElementById("topology-external").replaceChildren(...(external.length ? [
      el("span", { text: "Calls from outside the lanes (clients, nodes that left):" }),
      ...external.slice(0, 50).map((e) => el("span", { class: "chip mono", title: describe(e),
                                                       text: `${e.source} → ${e.target} ×${e.count}` })),
    ] : []));
    requestAnimationFrame(() => this.drawEdges());
  }

  card(node) {
    return el("div", { class: `node-card ${typeClass(node.type)} ${node.state}`, title: node.name,
                       dataset: { name: node.name, type: node.type } },
      el("div", { class: "row1" },
        el("span", { class: "node-type", text: node.type }),
        el("span", { class: `state ${node.self ? "self" : node.state}`, text: node.self ? "this console" : node.state })),
      el("div", { class: "name", text: node.name }));
  }

  /** Draw every edge as a curve from the side of one card to the facing side of the other. */
  drawEdges() {
    if (!this.data || !this.visible) return;
    const base = this.container.getBoundingClientRect();
    const cards = new Map([...this.container.querySelectorAll(".node-card")].map((c) => [c.dataset.name, c]));
    const paths = [];
    const seen = new Set();
    for (const edge of this.data.edges) {
      const from = cards.get(edge.source), to = cards.get(edge.target);
      if (!from || !to) continue;
      const a = from.getBoundingClientRect(), b = to.getBoundingClientRect();
      const reverse = seen.has(`${edge.target}>${edge.source}`) ? 7 : 0; // a pair talking both ways
      seen.add(`${edge.source}>${edge.target}`);
      const ya = a.top + a.height / 2 - base.top + reverse, yb = b.top + b.height / 2 - base.top + reverse;
      let x1, x2, c1, c2;
      if (Math.abs(a.left - b.left) < 4) { // same column: bow outwards, away from the other lanes
        const outwards = a.left + a.width / 2 < base.left + base.width / 2 ? -1 : 1;
        x1 = (outwards > 0 ? a.right : a.left) - base.left;
        x2 = (outwards > 0 ? b.right : b.left) - base.left;
        const bow = outwards * (28 + Math.min(70, Math.abs(yb - ya) / 3));
        c1 = [x1 + bow, ya]; c2 = [x2 + bow, yb];
      } else {
        const rightwards = a.left < b.left;
        x1 = (rightwards ? a.right : a.left) - base.left;
        x2 = (rightwards ? b.left : b.right) - base.left;
        const pull = (x2 - x1) * 0.45;
        c1 = [x1 + pull, ya]; c2 = [x2 - pull, yb];
      }
      const cls = edge.cross_mesh ? "edge cross-mesh" : "edge";
      const d = `M${x1},${ya} C${c1[0]},${c1[1]} ${c2[0]},${c2[1]} ${x2},${yb}`;
      const mid = [(x1 + 3 * c1[0] + 3 * c2[0] + x2) / 8, (ya + 3 * c1[1] + 3 * c2[1] + yb) / 8];
      paths.push(svg("path", { class: cls, d, "marker-end": `url(#${edge.cross_mesh ? "arrow-cross" : "arrow"})`,
                               "data-from": edge.source, "data-to": edge.target, "data-count": edge.count },
        svg("title", {}, describe(edge))));
      paths.push(svg("text", { x: mid[0], y: mid[1] - 5, "text-anchor": "middle", class: edge.cross_mesh ? "cross" : "" },
        `×${edge.count}`));
    }
    this.edgeLayer.replaceChildren(
      svg("defs", {}, arrowMarker("arrow", "#8c7d67"), arrowMarker("arrow-cross", "#b8501c")), ...paths);
  }
}
