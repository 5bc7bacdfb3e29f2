// The Cache view: the console node's gossiped directory as a sortable, filterable, paged table.
// It renders from the pushed snapshot; only one page of rows is ever in the DOM.

import { el, fmtAgo, renderPager, typeChip } from "./format.js";

const PAGE = 100;
const STATE_RANK = { alive: 0, suspect: 1 };

function addressOf(entry) {
  return entry.addrs.join(", ");
}

export class CacheView {
  constructor() {
    this.snapshot = null;
    this.offset = 0;
    this.sort = { key: "name", desc: false };
    this.meshes = "";
    this.filter = document.getElementById("cache-filter");
    this.mesh = document.getElementById("cache-mesh");
    this.filter.addEventListener("input", () => { this.offset = 0; this.render(); });
    this.mesh.addEventListener("change", () => { this.offset = 0; this.render(); });
    for (const th of document.querySelectorAll("#cache-table th[data-sort]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        this.sort = { key, desc: this.sort.key === key ? !this.sort.desc : false };
        this.render();
      });
    }
  }

  show(snapshot) {
    if (snapshot) this.snapshot = snapshot;
    this.render();
  }

  update(snapshot, visible) {
    this.snapshot = snapshot;
    if (visible) this.render();
  }

  rows() {
    const query = this.filter.value.trim().toLowerCase();
    const mesh = this.mesh.value;
    const { key, desc } = this.sort;
    const value = (e) => key === "location" ? addressOf(e) : key === "state" ? STATE_RANK[e.state] ?? 9 : e[key];
    return this.snapshot.directory
      .filter((e) => (!mesh || e.mesh === mesh)
        && (!query || `${e.name} ${e.type} ${addressOf(e)}`.toLowerCase().includes(query)))
      .sort((a, b) => {
        const [x, y] = [value(a), value(b)];
        const order = x < y ? -1 : x > y ? 1 : a.name < b.name ? -1 : 1;
        return desc ? -order : order;
      });
  }

  syncMeshes() {
    const meshes = [...new Set(this.snapshot.directory.map((e) => e.mesh))].sort();
    const key = meshes.join(",");
    if (key === this.meshes) return;
    this.meshes = key;
    const chosen = this.mesh.value;
    this.mesh.replaceChildren(el("option", { value: "", text: "All meshes" }),
      ...meshes.map((m) => el("option", { value: m, text: m, selected: m === chosen || null })));
  }

  render() {
    if (!this.snapshot) return;
    this.syncMeshes();
    const self = this.snapshot.node;
    const rows = this.rows();
    if (this.offset >= rows.length) this.offset = Math.max(0, rows.length - PAGE);
    const shown = rows.slice(this.offset, this.offset + PAGE);
    const body = document.createDocumentFragment();
    for (const e of shown) {
      body.append(el("tr", { class: e.name === self ? "self" : null, dataset: { name: e.name } },
        el("td", { class: "mono" }, e.name, e.name === self ? el("span", { class: "you", text: "this node" }) : null),
        el("td", { text: e.mesh }),
        el("td", {}, typeChip(e.type)),
        el("td", { class: "mono", text: addressOf(e) }),
        el("td", { class: "mono", title: e.node_id, text: e.id_prefix }),
        el("td", {}, el("span", { class: `state ${e.state}`, text: e.state })),
        el("td", { class: "num", text: fmtAgo(e.last_heard_s) }),
      ));
    }
    document.getElementById("cache-rows").replaceChildren(body);
    document.getElementById("cache-empty").hidden = shown.length > 0;
    const total = this.snapshot.directory.length;
    const meshes = new Set(this.snapshot.directory.map((e) => e.mesh)).size;
    document.getElementById("cache-count").textContent =
      `${total} node${total === 1 ? "" : "s"} in ${meshes} mesh${meshes === 1 ? "" : "es"}`;
    renderPager(document.getElementById("cache-pager"), { offset: this.offset, limit: PAGE, total: rows.length },
      (offset) => { this.offset = offset; this.render(); });
    for (const th of document.querySelectorAll("#cache-table th[data-sort]")) {
      th.classList.toggle("sorted", th.dataset.sort === this.sort.key);
      th.classList.toggle("desc", th.dataset.sort === this.sort.key && this.sort.desc);
    }
  }
}
