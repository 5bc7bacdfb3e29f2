// Small shared helpers: building DOM, talking to the API, formatting times and node types.

/** el("td", {class: "x", dataset: {name}}, child, "text") → an element. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** GET (or other) a console API path; throws an Error carrying the API's own message. */
export async function api(path, options = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { error: `HTTP ${response.status}` };
  }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

export const TYPES = ["broker", "gateway", "registry", "compute", "console"];

/** The node type in a node name `<mesh>.<type>.<hex6>`, or "other" (clients, tools). */
export function typeOfService(name) {
  const parts = (name || "").split(".");
  return parts.length === 3 && TYPES.includes(parts[1]) ? parts[1] : "other";
}

export function typeClass(type) {
  return "t-" + (TYPES.includes(type) ? type : "other");
}

export function typeChip(type) {
  return el("span", { class: `type-chip ${typeClass(type)}`, text: type });
}

/** 1234567 ns → "1.23 ms". */
export function fmtDuration(ns) {
  const n = Math.max(0, Number(ns) || 0);
  if (n < 1e3) return `${n} ns`;
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)} µs`;
  if (n < 1e9) return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)} ms`;
  return `${(n / 1e9).toFixed(2)} s`;
}

/** Seconds → "0.4s ago", "3m ago". */
export function fmtAgo(seconds) {
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(1)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

/** Epoch ns → "14:03:22.518" (local time). */
export function fmtClock(ns) {
  const d = new Date(Number(ns) / 1e6);
  const pad = (v, w = 2) => String(v).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** Render "prev · 1–50 of 1234 · next" into `container`; `go(offset)` is called on a click. */
export function renderPager(container, { offset, limit, total }, go) {
  const last = Math.min(offset + limit, total);
  container.replaceChildren(
    el("button", { class: "ghost", type: "button", disabled: offset <= 0 || null,
                   onclick: () => go(Math.max(0, offset - limit)), text: "‹ Prev" }),
    el("span", { text: total ? `${offset + 1}–${last} of ${total}` : "0 of 0" }),
    el("button", { class: "ghost", type: "button", disabled: last >= total || null,
                   onclick: () => go(offset + limit), text: "Next ›" }),
  );
}
