// MOBY console: a tile per sensor with its newest values, state and vibration zone; a live SVG
// chart per sensor; the fleet table. From the backend's JSON API only: no library, no network
// access beyond this backend. The DOM is built with textContent (never innerHTML), so sensor IDs
// and metadata cannot inject markup. Served under a strict Content-Security-Policy: no inline
// script or style, nothing from another origin.
// When the backend requires API tokens (docs/SECURITY.md) the page asks for one and keeps it in
// sessionStorage (this tab only), sending it as `Authorization: Bearer`.
"use strict";

const REFRESH_MS = 5000;
// A reading older than this, or than three of the sensor's own sample intervals if that is longer,
// is stale: the sensor may still be connected, but its values are not current.
const STALE_MIN_S = 60;
const MAIN_FIELD = { vibration: "rms_velocity", temperature: "temperature", humidity: "humidity", noise: "laeq" };
// The values a tile shows, by sensor type (other types: their first two values).
const TILE_FIELDS = {
  vibration: ["rms_velocity"],
  temperature: ["temperature"],
  humidity: ["humidity", "temperature"],
  noise: ["laeq", "lamax"],
};
const FIELD_LABELS = {
  rms_velocity: "RMS velocity",
  peak_accel_g: "Peak",
  temperature: "Temperature",
  humidity: "Humidity",
  laeq: "LAeq",
  lamax: "LAmax",
  iso_zone: "ISO zone",
};
// Units as sensors spell them in their birth metadata (`units`, plain ASCII) → how they are shown,
// and the smallest y-span a chart in that unit gets, so that noise does not look dramatic
// (0.1 °C of sensor noise is not a 100 % swing). The one table of display units.
const UNITS = {
  degC: { symbol: "°C", span: 2 },
  "°C": { symbol: "°C", span: 2 },
  Cel: { symbol: "°C", span: 2 },
  degF: { symbol: "°F", span: 4 },
  K: { symbol: "K", span: 2 },
  pct: { symbol: "%", span: 5 },
  percent: { symbol: "%", span: 5 },
  "%": { symbol: "%", span: 5 },
  "%RH": { symbol: "% RH", span: 5 },
  pctRH: { symbol: "% RH", span: 5 },
  "mm/s": { symbol: "mm/s", span: 1 },
  "m/s": { symbol: "m/s", span: 0.01 },
  "m/s2": { symbol: "m/s²", span: 1 },
  "m/s^2": { symbol: "m/s²", span: 1 },
  g: { symbol: "g", span: 0.1 },
  um: { symbol: "µm", span: 10 },
  Hz: { symbol: "Hz", span: 10 },
  rpm: { symbol: "rpm", span: 20 },
  dB: { symbol: "dB", span: 6 },
  dBA: { symbol: "dB(A)", span: 6 },
  "dB(A)": { symbol: "dB(A)", span: 6 },
  "dB(C)": { symbol: "dB(C)", span: 6 },
  dBm: { symbol: "dBm", span: 6 },
  degree: { symbol: "°", span: 5 },
  hPa: { symbol: "hPa", span: 5 },
  bar: { symbol: "bar", span: 0.1 },
  V: { symbol: "V", span: 1 },
  A: { symbol: "A", span: 1 },
  W: { symbol: "W", span: 10 },
  kW: { symbol: "kW", span: 1 },
  1: { symbol: "", span: 1 },
};
const ZONES = [
  null,
  ["A", "new machine condition"],
  ["B", "unrestricted long-term operation"],
  ["C", "restricted operation"],
  ["D", "damage likely"],
];
const STATE_WORDS = { online: "online", stale: "stale", offline: "offline", nodata: "no readings" };
const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "moby-api-token";
const state = {
  paused: false, sensors: [], latest: new Map(), latestOk: true, intervals: new Map(), lastAnnounced: "", timer: null,
  needToken: false,
};

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
const key = (s) => `${s.factory_id}/${s.sensor_id}`;
const chartId = (s) => `chart-${s.factory_id}-${s.sensor_id}`;
const fmt = (v) => {
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
};
const label = (field) => FIELD_LABELS[field] || field.replace(/_/g, " ");

function rawUnit(s, field) {
  const units = s.metadata && s.metadata.units;
  return (units && typeof units[field] === "string") ? units[field] : "";
}
function unitInfo(raw) {
  if (Object.prototype.hasOwnProperty.call(UNITS, raw)) return UNITS[raw];
  return { symbol: raw, span: null };
}
const withUnit = (v, raw) => `${fmt(v)}${unitInfo(raw).symbol ? " " + unitInfo(raw).symbol : ""}`;

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
function timeEl(iso, prefix = "") {
  return el("time", { datetime: iso, title: iso }, prefix + ago(Date.parse(iso)));
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
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
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

function zoneOf(latest) {
  const z = latest && latest.values.iso_zone;
  return Number.isInteger(z) && z >= 1 && z <= 4 ? ZONES[z] : null;
}
function zoneBadge(zone) {
  const [letter, meaning] = zone;
  const badge = el("span", { class: `zone zone-${letter.toLowerCase()}`, title: `ISO 10816 zone ${letter}: ${meaning}` });
  badge.append(el("span", { class: "visually-hidden" }, "zone "), document.createTextNode(letter),
    el("span", { class: "visually-hidden" }, `, ${meaning}`));
  return badge;
}

// online: connected and its newest reading is current; stale: connected but the newest reading is
// old; offline: the backend says so (Last Will, offline status, or not heard from for 5 minutes).
function stateOf(s, latest) {
  if (!s.online) return "offline";
  if (!state.latestOk) return "online"; // the database did not answer: nothing is known of the values
  if (!latest) return s.sensor_type ? "stale" : "nodata";
  const interval = state.intervals.get(key(s)) || 0;
  const limitMs = Math.max(STALE_MIN_S * 1000, 3 * interval);
  return Date.now() - Date.parse(latest.time) > limitMs ? "stale" : "online";
}

function tileFields(s, latest) {
  if (!latest) return [];
  const wanted = TILE_FIELDS[s.sensor_type] ||
    Object.keys(latest.values).filter((f) => f !== "iso_zone").sort().slice(0, 2);
  return wanted.filter((f) => typeof latest.values[f] === "number");
}

function renderFactories(sensors) {
  const select = $("factory");
  const known = new Set([...select.options].map((o) => o.value));
  for (const f of [...new Set(sensors.map((s) => s.factory_id))].sort()) {
    if (!known.has(f)) select.append(el("option", { value: f }, f));
  }
}

// Tiles, rows and charts are kept and updated in place: re-creating them every refresh would
// throw away keyboard focus and make screen readers re-read the page.
function sameChildren(parent, nodes) {
  const current = [...parent.children];
  return current.length === nodes.length && current.every((n, i) => n === nodes[i]);
}

function jumpButton(s) {
  const jump = el("button", { type: "button", class: "link", "aria-controls": chartId(s) }, s.sensor_id);
  jump.addEventListener("click", () => {
    const fig = $(chartId(s));
    if (fig) { fig.scrollIntoView({ block: "center" }); fig.focus(); }
  });
  return jump;
}

function stateBadge(st) {
  return el("span", { class: `state ${st}` }, STATE_WORDS[st]);
}

function tileFor(s) {
  const id = `tile-${s.factory_id}-${s.sensor_id}`;
  let li = $(id);
  if (!li) {
    li = el("li", { id, class: "tile" });
    const head = el("div", { class: "tile-head" });
    const h3 = el("h3");
    h3.append(jumpButton(s));
    head.append(h3, el("span", { class: "slot-state" }));
    li.append(head, el("div", { class: "slot-values" }), el("p", { class: "meta" }));
  }
  const latest = state.latest.get(key(s));
  const st = stateOf(s, latest);
  li.className = `tile ${st}`;
  li.querySelector(".slot-state").replaceChildren(stateBadge(st));

  const fields = tileFields(s, latest);
  const zone = zoneOf(latest);
  const slot = li.querySelector(".slot-values");
  if (fields.length || zone) {
    const dl = el("dl", { class: "values" });
    for (const f of fields) {
      const item = el("div");
      const dd = el("dd", {}, fmt(latest.values[f]));
      const symbol = unitInfo(rawUnit(s, f)).symbol;
      if (symbol) dd.append(el("span", { class: "unit" }, symbol));
      item.append(el("dt", {}, label(f)), dd);
      dl.append(item);
    }
    if (zone) {
      const item = el("div");
      const dd = el("dd");
      dd.append(zoneBadge(zone));
      item.append(el("dt", {}, "ISO zone"), dd);
      dl.append(item);
    }
    slot.replaceChildren(dl);
  } else {
    const why = !state.latestOk ? "Values unavailable."
      : s.sensor_type ? "No reading in the last hours." : "No readings yet.";
    slot.replaceChildren(el("p", { class: "novalues" }, why));
  }

  const meta = li.querySelector(".meta");
  const old = st === "stale" || st === "offline";
  // A stale or offline tile says how old its values are, in place of the sensor type (its values
  // and name tell that): the line must stay one line for the fleet to fit one screen.
  const machine = s.metadata && s.metadata.machine_id;
  const where = [old ? null : s.sensor_type, machine].filter(Boolean).join(" · ");
  const parts = [document.createTextNode(where ? `${where} · ` : "")];
  if (latest) {
    const t = timeEl(latest.time);
    if (old) {
      t.className = "age-old";
      t.prepend(el("span", { class: "visually-hidden" }, "newest reading "));
    }
    parts.push(t);
  } else if (s.last_seen) {
    parts.push(timeEl(s.last_seen, "heard "));
  } else {
    parts.push(document.createTextNode("never heard"));
  }
  meta.replaceChildren(...parts);
  return li;
}

function renderOverview(sensors) {
  const list = $("overview");
  const tiles = sensors.map(tileFor);
  if (!tiles.length) tiles.push(el("li", { class: "nodata" }, "No sensors seen yet."));
  if (!sameChildren(list, tiles)) list.replaceChildren(...tiles);
}

function rowFor(s) {
  const id = `row-${s.factory_id}-${s.sensor_id}`;
  let tr = $(id);
  if (!tr) {
    tr = el("tr", { id });
    const name = el("td");
    name.append(jumpButton(s));
    tr.append(name, el("td"), el("td"), el("td"), el("td", { class: "values" }), el("td"), el("td"),
      el("td", { class: "num" }));
  }
  const [, factory, type, stateCell, values, zoneCell, seen, readings] = tr.cells;
  const latest = state.latest.get(key(s));
  factory.textContent = s.factory_id;
  type.textContent = s.sensor_type || "—";
  stateCell.replaceChildren(stateBadge(stateOf(s, latest)));
  const fields = tileFields(s, latest);
  values.textContent = fields.length
    ? fields.map((f) => `${label(f)} ${withUnit(latest.values[f], rawUnit(s, f))}`).join(", ")
      + ` (${ago(Date.parse(latest.time))})`
    : "—";
  const zone = zoneOf(latest);
  zoneCell.replaceChildren(zone ? zoneBadge(zone) : document.createTextNode("—"));
  seen.replaceChildren(s.last_seen ? timeEl(s.last_seen) : document.createTextNode("never"));
  readings.textContent = String(s.readings);
  return tr;
}

function renderTable(sensors) {
  const body = document.querySelector("#fleet tbody");
  const rows = sensors.map(rowFor);
  if (!rows.length) {
    const tr = el("tr");
    tr.append(el("td", { colspan: "8", class: "nodata" }, "No sensors seen yet."));
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

function median(xs) {
  if (!xs.length) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// The y-range: the data's, widened to the unit's minimum span around its middle (never below 0
// for values that are never negative), with a little headroom.
function yRange(values, raw) {
  let lo = Math.min(...values), hi = Math.max(...values);
  const mid = (lo + hi) / 2;
  const minSpan = unitInfo(raw).span ?? Math.max(Math.abs(mid) * 0.1, 1e-6);
  if (hi - lo < minSpan) {
    lo = mid - minSpan / 2;
    hi = mid + minSpan / 2;
    if (Math.min(...values) >= 0 && lo < 0) { hi -= lo; lo = 0; }
  } else {
    const pad = (hi - lo) * 0.05;
    lo = Math.min(...values) >= 0 ? Math.max(0, lo - pad) : lo - pad;
    hi += pad;
  }
  return [lo, hi];
}

function drawChart(fig, s, field, points, windowS) {
  const raw = rawUnit(s, field);
  const symbol = unitInfo(raw).symbol;
  const body = fig.querySelector(".body");
  const latestText = fig.querySelector(".latest");
  const end = Date.now(), start = end - windowS * 1000;
  const series = points
    .filter((p) => typeof p[field] === "number")
    .map((p) => [Date.parse(p.time), p[field]])
    .filter(([t]) => t >= start && t <= end)
    .sort((a, b) => a[0] - b[0]);
  if (!series.length) {
    latestText.textContent = "";
    body.replaceChildren(el("p", { class: "nodata" }, `No ${label(field)} readings in the window.`));
    return;
  }
  // Gaps: a step longer than three of the sensor's usual steps breaks the line.
  const steps = series.slice(1).map(([t], i) => t - series[i][0]);
  const usual = median(steps);
  if (usual > 0) state.intervals.set(key(s), usual);
  const runs = [[series[0]]];
  for (let i = 1; i < series.length; i++) {
    if (usual > 0 && steps[i - 1] > 3 * usual) runs.push([]);
    runs[runs.length - 1].push(series[i]);
  }

  const W = Math.max(200, Math.round(body.clientWidth || 400)), H = 128, L = 40, T = 8, B = 16;
  const [lo, hi] = yRange(series.map(([, v]) => v), raw);
  const x = (t) => L + ((t - start) / (end - start)) * (W - L - 2);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const values = series.map(([, v]) => v);
  const last = values[values.length - 1];
  const minutes = Math.round(windowS / 60);
  const gaps = runs.length - 1;
  const summary = `${label(field)} of ${s.sensor_id}, last ${minutes} minutes: latest ${withUnit(last, raw)}, ` +
    `min ${withUnit(Math.min(...values), raw)}, max ${withUnit(Math.max(...values), raw)}, ${values.length} points` +
    (gaps ? `, ${gaps} gap${gaps > 1 ? "s" : ""} in the readings` : "");
  const svg = svgEl("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary,
    preserveAspectRatio: "none" });
  const title = svgEl("title");
  title.textContent = summary;
  svg.append(title);
  for (const v of [lo, hi]) {
    svg.append(svgEl("line", { class: "grid", x1: L, x2: W, y1: y(v), y2: y(v) }));
    const tick = svgEl("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" });
    tick.textContent = fmt(v);
    svg.append(tick);
  }
  for (const [text, at, anchor] of [[`−${minutes} min`, L, "start"], ["now", W - 2, "end"]]) {
    const tick = svgEl("text", { x: at, y: H - 3, "text-anchor": anchor });
    tick.textContent = text;
    svg.append(tick);
  }
  for (const run of runs) {
    if (run.length === 1) {
      svg.append(svgEl("circle", { class: "dot", cx: x(run[0][0]).toFixed(1), cy: y(run[0][1]).toFixed(1), r: 2 }));
    } else {
      svg.append(svgEl("polyline", {
        class: "line",
        points: run.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      }));
    }
  }
  latestText.textContent = `${label(field)} ${fmt(last)}${symbol ? " " + symbol : ""}`;
  body.replaceChildren(svg);
}

async function refreshCharts(sensors) {
  const windowS = Number($("window").value);
  const container = $("charts");
  const withType = sensors.filter((s) => s.sensor_type);
  const figures = withType.map((s) => figureFor(s));
  if (!sameChildren(container, figures)) container.replaceChildren(...figures);
  const startIso = new Date(Date.now() - windowS * 1000).toISOString();
  // A few requests at a time: the backend also serves ingest.
  const queue = [...withType];
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
        if (fig) {
          fig.querySelector(".latest").textContent = "";
          fig.querySelector(".body").replaceChildren(el("p", { class: "nodata" }, `Readings unavailable (${err.message}).`));
        }
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

async function refresh() {
  if (state.paused || state.needToken) return;
  try {
    const factory = $("factory").value;
    const latestUrl = "/api/v1/latest" + (factory ? `?factory_id=${encodeURIComponent(factory)}` : "");
    const [sensorsAnswer, latestAnswer] = await Promise.allSettled([getJSON("/api/v1/sensors"), getJSON(latestUrl)]);
    if (sensorsAnswer.status === "rejected") throw sensorsAnswer.reason;
    if (latestAnswer.status === "rejected" && latestAnswer.reason instanceof AuthError) throw latestAnswer.reason;
    const all = sensorsAnswer.value.items;
    // Without InfluxDB there are no values to show, but the states still are.
    state.latestOk = latestAnswer.status === "fulfilled";
    state.latest = new Map(state.latestOk ? latestAnswer.value.items.map((item) => [key(item), item]) : []);
    renderFactories(all);
    const sensors = factory ? all.filter((s) => s.factory_id === factory) : all;
    state.sensors = sensors;
    renderOverview(sensors);
    renderTable(sensors);
    const counts = { online: 0, stale: 0, offline: 0, nodata: 0 };
    for (const s of sensors) counts[stateOf(s, state.latest.get(key(s)))] += 1;
    // Announce only when the picture changes, not on every refresh.
    let message = `${sensors.length} sensors: ${counts.online} online, ${counts.stale} stale, ${counts.offline} offline` +
      (counts.nodata ? `, ${counts.nodata} without readings.` : ".");
    if (!state.latestOk) message += " Newest values unavailable: the database did not answer.";
    if (message !== state.lastAnnounced) {
      $("status").textContent = message;
      state.lastAnnounced = message;
    }
    await refreshCharts(sensors);
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
