// The console's shell: hash routing between the three views, and the live event stream.
//
// The server pushes a `snapshot` (the directory, span counters) every push interval over
// server-sent events; each view re-renders from it when shown. "updated N.Ns ago" is the age
// of the last snapshot, ticking locally: it stays under a second while the stream is live.

import { api } from "./format.js";
import { CacheView } from "./cache.js";
import { TopologyView } from "./topology.js";
import { TracesView } from "./traces.js";

const views = { cache: new CacheView(), topology: new TopologyView(), traces: new TracesView() };
const state = { snapshot: null, receivedAt: null, current: null };
window.meshfabricConsole = { views, state }; // for the browser tests, and for poking at from devtools

function route() {
  const [wanted, arg] = (location.hash.replace(/^#/, "") || "cache").split("/");
  const name = wanted in views ? wanted : "cache";
  for (const key of Object.keys(views)) {
    document.getElementById(`view-${key}`).hidden = key !== name;
  }
  for (const tab of document.querySelectorAll(".tabs a")) {
    tab.classList.toggle("active", tab.dataset.view === name);
  }
  state.current = name;
  views[name].show(state.snapshot, arg ? decodeURIComponent(arg) : null);
}

function setLive(mode, text) {
  const live = document.getElementById("live");
  live.dataset.state = mode;
  document.getElementById("live-text").textContent = text;
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", (event) => {
    state.snapshot = JSON.parse(event.data);
    state.receivedAt = performance.now();
    setLive("live", "live");
    const updated = document.getElementById("cache-updated");
    updated.dataset.seq = state.snapshot.seq;
    for (const [name, view] of Object.entries(views)) view.update(state.snapshot, name === state.current);
    tick();
  });
  source.addEventListener("error", () => setLive("lost", "reconnecting")); // EventSource retries by itself
}

function tick() {
  if (state.receivedAt === null) return;
  const age = (performance.now() - state.receivedAt) / 1000;
  const updated = document.getElementById("cache-updated");
  updated.textContent = `updated ${age.toFixed(1)}s ago`;
  updated.classList.toggle("stale", age > 3);
}

async function start() {
  window.addEventListener("hashchange", route);
  route();
  connect();
  setInterval(tick, 100);
  try {
    const status = await api("/api/status");
    document.getElementById("node-name").textContent = status.node.name;
    document.getElementById("cache-node").textContent = status.node.name;
    document.title = `${status.node.name} · meshfabric console`;
    const badge = document.getElementById("mode-badge");
    if (status.console.actions_enabled) {
      badge.textContent = "actions on";
      badge.classList.add("armed");
    }
  } catch (error) {
    setLive("lost", `status failed: ${error.message}`);
  }
}

start();
