// MOBY console: fleet table and one live SVG chart per sensor, from the backend's JSON API.
// No library and no network access beyond this backend. The DOM is built with textContent
// (never innerHTML), so sensor IDs and metadata cannot inject markup. Served under a strict
// Content-Security-Policy: no inline script or style, nothing from another origin.
// When the backend requires API tokens (docs/SECURITY.md) the page asks for one and keeps it in
// sessionStorage (this tab only), sending it as `Authorization: Bearer`.
"use strict";

const REFRESH_MS = 5000;
const MAIN_FIELD = { vibration: "rms_velocity", temperature: "temperature", humidity: "humidity", noise: "laeq" };
const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "moby-api-token";
const state = { paused: false, sensors: [], lastAnnounced: "", timer: null, needToken: false };

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
};
const svgEl = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
};
const chartId = (s) => `chart-${s.factory_id}-${s.sensor_id}`;
const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

class AuthError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function getJSON(url) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(url, { headers });
  if (r.status === 401 || r.status === 403) {
    let detail = "";
    try { detail = (await r.json()).detail || ""; } catch (e) { detail = ""; }
    throw new AuthError(r.status, String(detail || `HTTP ${r.status}`));
  }
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function askForToken(err) {
  const had = Boolean(sessionStorage.getItem(TOKEN_KEY));
  const message = err.status === 403
    ? `This token may not read the fleet: ${err.message}. Enter a viewer token (or above).`
    : had ? "The token was refused (unknown, revoked or malformed). Enter another."
      : "This backend needs an API token (viewer or above).";
  state.needToken = true;
  $("login-message").textContent = message;
  $("status").textContent = message;
  state.lastAnnounced = "";
  const form = $("login");
  if (form.hidden) { form.hidden = false; $("token").focus(); }
}

function showForget() { $("forget").hidden = !sessionStorage.getItem(TOKEN_KEY); }

function renderFactories(sensors) {
  const select = $("factory");
  const known = new Set([...select.options].map((o) => o.value));
  for (const f of [...new Set(sensors.map((s) => s.factory_id))].sort()) {
    if (!known.has(f)) select.append(el("option", { value: f }, f));
  }
}

// Rows and charts are kept and updated in place: re-creating them every refresh would throw
// away keyboard focus and make screen readers re-read the page.
function sameChildren(parent, nodes) {
  const current = [...parent.children];
  return current.length === nodes.length && current.every((n, i) => n === nodes[i]);
}

function rowFor(s) {
  const id = `row-${s.factory_id}-${s.sensor_id}`;
  let tr = $(id);
  if (!tr) {
    tr = el("tr", { id });
    const name = el("td");
    const jump = el("button", { type: "button", class: "link", "aria-controls": chartId(s) }, s.sensor_id);
    jump.addEventListener("click", () => {
      const fig = $(chartId(s));
      if (fig) { fig.scrollIntoView({ block: "center" }); fig.focus(); }
    });
    name.append(jump);
    tr.append(name, el("td"), el("td"), el("td"), el("td"), el("td", { class: "num" }));
  }
  const [, factory, type, stateCell, seen, readings] = tr.cells;
  factory.textContent = s.factory_id;
  type.textContent = s.sensor_type || "—";
  const online = s.online ? "online" : "offline";
  stateCell.replaceChildren(el("span", { class: `state ${online}` }, online));
  seen.replaceChildren(s.last_seen ? el("time", { datetime: s.last_seen, title: s.last_seen }, ago(s.last_seen))
    : document.createTextNode("never"));
  readings.textContent = String(s.readings);
  return tr;
}

function renderTable(sensors) {
  const body = document.querySelector("#fleet tbody");
  const rows = sensors.map(rowFor);
  if (!rows.length) {
    const tr = el("tr");
    tr.append(el("td", { colspan: "6", class: "nodata" }, "No sensors seen yet."));
    rows.push(tr);
  }
  if (!sameChildren(body, rows)) body.replaceChildren(...rows);
}

function figureFor(s) {
  let fig = $(chartId(s));
  if (!fig) {
    fig = el("figure", { class: "chart", id: chartId(s), tabindex: "-1", "aria-labelledby": `${chartId(s)}-cap` });
    const cap = el("figcaption", { id: `${chartId(s)}-cap` });
    cap.append(el("span", { class: "name" }, s.sensor_id), el("span", { class: "latest" }, ""));
    fig.append(cap, el("div", { class: "body" }));
  }
  return fig;
}

function drawChart(fig, s, field, points, windowS) {
  const unit = (s.metadata && s.metadata.units && s.metadata.units[field]) || "";
  const values = points.filter((p) => typeof p[field] === "number");
  const body = fig.querySelector(".body");
  const latest = fig.querySelector(".latest");
  if (!values.length) {
    latest.textContent = "";
    body.replaceChildren(el("p", { class: "nodata" }, `No ${field || "readings"} in the window.`));
    return;
  }
  const W = 400, H = 120, L = 34, B = 14;
  const end = Date.now(), start = end - windowS * 1000;
  let lo = Math.min(...values.map((p) => p[field])), hi = Math.max(...values.map((p) => p[field]));
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (t) => L + ((t - start) / (end - start)) * (W - L);
  const y = (v) => 10 + (1 - (v - lo) / (hi - lo)) * (H - B - 14);
  const last = values[values.length - 1][field];
  const summary = `${field} of ${s.sensor_id}, last ${Math.round(windowS / 60)} minutes: ` +
    `latest ${fmt(last)} ${unit}, min ${fmt(lo)}, max ${fmt(hi)}, ${values.length} points`;
  const svg = svgEl("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary,
    preserveAspectRatio: "none" });
  const title = svgEl("title");
  title.textContent = summary;
  svg.append(title);
  for (const v of [lo, hi]) {
    svg.append(svgEl("line", { class: "grid", x1: L, x2: W, y1: y(v), y2: y(v) }));
    const label = svgEl("text", { x: 0, y: y(v) + 3 });
    label.textContent = fmt(v);
    svg.append(label);
  }
  for (const [text, at, anchor] of [[`−${Math.round(windowS / 60)} min`, L, "start"], ["now", W, "end"]]) {
    const label = svgEl("text", { x: at, y: H - 2, "text-anchor": anchor });
    label.textContent = text;
    svg.append(label);
  }
  const line = svgEl("polyline", {
    class: "line",
    points: values.map((p) => `${x(Date.parse(p.time)).toFixed(1)},${y(p[field]).toFixed(1)}`).join(" "),
  });
  svg.append(line);
  latest.textContent = `${field} ${fmt(last)} ${unit}`.trim();
  body.replaceChildren(svg);
}

async function refreshCharts(sensors) {
  const windowS = Number($("window").value);
  const container = $("charts");
  const figures = sensors.filter((s) => s.sensor_type).map((s) => figureFor(s));
  if (!sameChildren(container, figures)) container.replaceChildren(...figures);
  const startIso = new Date(Date.now() - windowS * 1000).toISOString();
  // A few requests at a time: the backend also serves ingest.
  const queue = sensors.filter((s) => s.sensor_type);
  const worker = async () => {
    for (let s = queue.shift(); s; s = queue.shift()) {
      const field = MAIN_FIELD[s.sensor_type];
      const params = new URLSearchParams({ factory_id: s.factory_id, start: startIso, limit: "5000" });
      if (field) params.set("fields", field);
      try {
        const data = await getJSON(`/api/v1/sensors/${encodeURIComponent(s.sensor_id)}/readings?${params}`);
        drawChart($(chartId(s)), s, field || data.fields[0], data.points, windowS);
      } catch (err) {
        const fig = $(chartId(s));
        if (fig) fig.querySelector(".body").replaceChildren(el("p", { class: "nodata" }, String(err.message)));
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

async function refresh() {
  if (state.paused || state.needToken) return;
  try {
    const factory = $("factory").value;
    const all = (await getJSON("/api/v1/sensors")).items;
    renderFactories(all);
    const sensors = factory ? all.filter((s) => s.factory_id === factory) : all;
    state.sensors = sensors;
    renderTable(sensors);
    await refreshCharts(sensors);
    const online = sensors.filter((s) => s.online).length;
    // Announce only when the picture changes, not on every refresh.
    const message = `${sensors.length} sensors, ${online} online, ${sensors.length - online} offline.`;
    if (message !== state.lastAnnounced) {
      $("status").textContent = message;
      state.lastAnnounced = message;
    }
    document.body.dataset.loaded = "true";
  } catch (err) {
    if (err instanceof AuthError) { askForToken(err); return; }
    $("status").textContent = `Update failed: ${err.message}. Retrying.`;
    state.lastAnnounced = "";
  }
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => { await refresh(); schedule(); }, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("factory").addEventListener("change", () => { state.lastAnnounced = ""; refresh(); });
  $("window").addEventListener("change", () => refresh());
  $("pause").addEventListener("click", (e) => {
    state.paused = !state.paused;
    e.currentTarget.setAttribute("aria-pressed", String(state.paused));
    e.currentTarget.textContent = state.paused ? "Resume updates" : "Pause updates";
    $("status").textContent = state.paused ? "Updates paused." : "Updates resumed.";
    state.lastAnnounced = "";
    if (!state.paused) refresh();
  });
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("login").hidden = true;
    state.needToken = false;
    showForget();
    $("status").textContent = "Loading…";
    refresh();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showForget();
    $("status").textContent = "Token forgotten.";
    state.lastAnnounced = "";
    refresh();
  });
  showForget();
  refresh().then(schedule);
});
