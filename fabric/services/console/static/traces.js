// The Traces view: recent traces, searchable by service and span name, paged on the server;
// a click opens the trace's waterfall (waterfall.js) and puts its id in the URL (#traces/<id>).

import { api, el, fmtAgo, fmtDuration, renderPager, typeClass, typeOfService } from "./format.js";
import { renderWaterfall } from "./waterfall.js";

const PAGE = 50;
const MIN_RELOAD_MS = 2000;

export class TracesView {
  constructor() {
    this.form = document.getElementById("trace-search");
    this.list = document.getElementById("trace-items");
    this.query = { service: "", name: "" };
    this.offset = 0;
    this.loadedVersion = -1;
    this.lastLoad = 0;
    this.openId = null;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(this.form);
      this.query = { service: String(data.get("service")).trim(), name: String(data.get("name")).trim() };
      this.offset = 0;
      this.load();
    });
  }

  show(snapshot, traceId) {
    if (this.loadedVersion < 0) this.load();
    if (traceId && traceId !== this.openId) this.open(traceId);
  }

  update(snapshot, visible) {
    const { count, traces, version } = snapshot.spans;
    document.getElementById("trace-stats").textContent = `${count} spans in ${traces} traces`;
    // Keep the first page fresh as spans arrive, without reloading more than every 2 s.
    if (visible && this.offset === 0 && version !== this.loadedVersion
        && performance.now() - this.lastLoad > MIN_RELOAD_MS) {
      this.load();
    }
  }

  async load() {
    this.lastLoad = performance.now();
    const params = new URLSearchParams({ ...this.query, offset: this.offset, limit: PAGE });
    const errorBox = document.getElementById("trace-error");
    try {
      const page = await api(`/api/traces?${params}`);
      errorBox.hidden = true;
      this.loadedVersion = page.version;
      this.renderList(page);
    } catch (error) {
      errorBox.textContent = error.message;
      errorBox.hidden = false;
    }
  }

  renderList(page) {
    const now = Date.now() / 1000;
    const longest = Math.max(1, ...page.traces.map((t) => t.duration_ns));
    this.list.replaceChildren(...page.traces.map((t) => el("li", {
      class: `trace-item${t.trace_id === this.openId ? " selected" : ""}`,
      dataset: { traceId: t.trace_id, rootName: t.root_name, rootService: t.root_service },
      onclick: () => { location.hash = `#traces/${t.trace_id}`; },
    },
      el("div", { class: "title" },
        el("span", { class: `dot ${typeClass(typeOfService(t.root_service))}` }),
        el("span", { text: t.root_name }),
        el("span", { class: "svc", text: t.root_service })),
      el("div", { class: "sub" },
        el("span", { text: fmtDuration(t.duration_ns) }),
        el("span", { text: `${t.span_count} span${t.span_count === 1 ? "" : "s"}` }),
        el("span", { text: `${t.services.length} service${t.services.length === 1 ? "" : "s"}` }),
        t.errors ? el("span", { class: "err", text: `${t.errors} error${t.errors === 1 ? "" : "s"}` }) : null,
        el("span", { text: fmtAgo(now - t.start_ns / 1e9) })),
      el("div", { class: "mini" }, el("i", { style: { width: `${Math.max(1, (t.duration_ns / longest) * 100)}%` } })),
    )));
    const what = this.query.service || this.query.name ? "matching traces" : "traces";
    document.getElementById("trace-total").textContent = `${page.total} ${what}`;
    renderPager(document.getElementById("trace-pager"), page, (offset) => { this.offset = offset; this.load(); });
  }

  async open(traceId) {
    this.openId = traceId;
    for (const item of this.list.children) item.classList.toggle("selected", item.dataset.traceId === traceId);
    const target = document.getElementById("waterfall");
    try {
      renderWaterfall(target, await api(`/api/traces/${encodeURIComponent(traceId)}`));
    } catch (error) {
      target.replaceChildren(el("div", { class: "placeholder" },
        el("h2", { text: "Cannot open this trace" }), el("p", { class: "error", text: error.message })));
    }
  }
}
