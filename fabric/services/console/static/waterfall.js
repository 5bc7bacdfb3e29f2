// A trace as a Jaeger-like waterfall: one row per span, nested under its parent, with a bar on
// a shared time axis. Click a row for its attributes; click its caret to fold its children.

import { el, fmtClock, fmtDuration, typeClass, typeOfService } from "./format.js";

/** Spans in depth-first order (children by start time), each with its depth. */
export function treeOrder(spans) {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parent_span_id && byId.has(s.parent_span_id)) {
      if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
      children.get(s.parent_span_id).push(s);
    } else {
      roots.push(s);
    }
  }
  const byStart = (a, b) => a.start_ns - b.start_ns;
  const rows = [];
  const stack = roots.sort(byStart).reverse().map((s) => [s, 0]);
  while (stack.length) { // iterative: a long chain of spans must not overflow the call stack
    const [span, depth] = stack.pop();
    const kids = (children.get(span.span_id) || []).sort(byStart);
    rows.push({ span, depth, hasChildren: kids.length > 0 });
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
  }
  return rows;
}

function detailTable(title, entries) {
  if (!entries.length) return [];
  return [el("h3", { text: title }), el("table", {}, entries.map(([k, v]) =>
    el("tr", {}, el("th", { text: k }), el("td", { text: typeof v === "string" ? v : JSON.stringify(v) }))))];
}

function details(span, traceStart) {
  const sorted = (obj) => Object.entries(obj || {}).sort(([a], [b]) => (a < b ? -1 : 1));
  return el("div", { class: "wf-detail", onclick: (e) => e.stopPropagation() },
    detailTable("Span", [
      ["span id", span.span_id], ["parent span id", span.parent_span_id || "—"], ["kind", span.kind],
      ["status", span.status + (span.status_message ? `: ${span.status_message}` : "")],
      ["starts at", `+${fmtDuration(span.start_ns - traceStart)}`], ["duration", fmtDuration(span.duration_ns)],
    ]),
    detailTable("Attributes", sorted(span.attributes)),
    detailTable("Process (resource)", sorted(span.resource)),
    detailTable("Events", span.events.map((e) => [e.name, e.attributes])),
    detailTable("Links", span.links.map((l) => [l.trace_id, l.span_id])));
}

/** Fill `container` with the waterfall of `trace` ({summary, spans} from /api/traces/<id>). */
export function renderWaterfall(container, trace) {
  const { summary, spans } = trace;
  const start = summary.start_ns;
  const total = Math.max(1, summary.duration_ns);
  const rows = treeOrder(spans);
  const depth = Math.max(...rows.map((r) => r.depth)) + 1;
  const pct = (ns) => `${Math.min(100, Math.max(0, (ns / total) * 100))}%`;

  const head = el("div", { class: "wf-head" },
    el("h2", {}, el("span", { text: summary.root_name }), el("span", { class: "svc", text: summary.root_service })),
    el("div", { class: "wf-stats" },
      el("span", {}, "Trace ", el("b", { class: "mono", text: summary.trace_id })),
      el("span", {}, "Started ", el("b", { text: fmtClock(start) })),
      el("span", {}, "Duration ", el("b", { text: fmtDuration(summary.duration_ns) })),
      el("span", {}, "Services ", el("b", { text: summary.services.length })),
      el("span", {}, "Depth ", el("b", { text: depth })),
      el("span", {}, "Spans ", el("b", { text: spans.length })),
      summary.root_complete ? null : el("span", { class: "error", text: "root's parent span not received" })));

  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => el("span", { style: { left: `${f * 100}%` }, text: fmtDuration(total * f) }));
  const ruler = el("div", { class: "wf-ruler" }, el("div", { class: "lbl", text: "Service & operation" }),
    el("div", { class: "wf-ticks" }, ticks));

  const folded = new Set();
  const rowEls = rows.map(({ span, depth: d, hasChildren }) => {
    const offset = span.start_ns - start;
    const left = (offset / total) * 100;
    const width = (span.duration_ns / total) * 100;
    // The duration label goes right of the bar; if that would run off the track, inside a wide
    // bar or left of a narrow one.
    const place = left + width <= 78 ? "right" : width >= 12 ? "inside" : "left";
    const type = typeOfService(span.service);
    const caret = el("span", { class: "caret", text: hasChildren ? "▾" : "" });
    const row = el("div", {
      class: `wf-row ${typeClass(type)}`,
      dataset: { spanId: span.span_id, parentId: span.parent_span_id || "", depth: d, name: span.name, service: span.service },
    },
      el("div", { class: "wf-label", style: { paddingLeft: `${18 + d * 18}px` } },
        caret,
        el("span", { class: "dot" }),
        el("span", { class: "op", title: span.name, text: span.name }),
        span.kind !== "INTERNAL" ? el("span", { class: "kind", text: span.kind }) : null,
        el("span", { class: "svc", text: span.service })),
      el("div", { class: "wf-track" },
        el("div", { class: `wf-bar${span.status === "ERROR" ? " error" : ""}`,
                    style: { left: `${left}%`, width: `max(2px, ${width}%)` } }),
        el("span", { class: `wf-dur${place === "inside" ? " inside" : ""}`, text: fmtDuration(span.duration_ns),
                     style: place === "right" ? { left: `calc(${pct(offset + span.duration_ns)} + 6px)` }
                       : place === "inside" ? { right: `calc(${100 - left - width}% + 6px)` }
                         : { right: `calc(${100 - left}% + 6px)` } })));
    row.addEventListener("click", () => {
      const open = row.nextElementSibling?.classList.contains("wf-detail");
      if (open) row.nextElementSibling.remove();
      else row.after(details(span, start));
      row.classList.toggle("open", !open);
    });
    caret.addEventListener("click", (event) => {
      if (!hasChildren) return;
      event.stopPropagation();
      if (folded.has(span.span_id)) folded.delete(span.span_id); else folded.add(span.span_id);
      caret.textContent = folded.has(span.span_id) ? "▸" : "▾";
      applyFolds();
    });
    return row;
  });

  function applyFolds() {
    const hiddenUnder = new Set();
    rows.forEach(({ span }, i) => {
      const hide = span.parent_span_id && (hiddenUnder.has(span.parent_span_id) || folded.has(span.parent_span_id));
      rowEls[i].hidden = Boolean(hide);
      if (hide) hiddenUnder.add(span.span_id);
      const detail = rowEls[i].nextElementSibling;
      if (detail?.classList.contains("wf-detail")) detail.hidden = Boolean(hide);
    });
  }

  container.replaceChildren(head, el("div", { class: "wf-grid" }, ruler, rowEls));
}
