// The live page: status every 2 s from /api/status, values from the /api/stream event source.
// Plain JavaScript and canvas, no external resources: the line PC may have no internet.
"use strict";

const WINDOW_MS = 10 * 60 * 1000;
const STATUS_EVERY_MS = 2000;
const series = new Map();   // "instrument/channel" -> [[t_ms, value|null, quality], ...]
const lastSeq = new Map();  // instrument -> last sequence number shown (replays overlap)
const latest = new Map();   // "instrument/channel" -> last reading from the stream
let dirty = new Set();
let streamUp = false;
let statusUp = false;

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const PREFIXES = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];

function formatValue(value, unit) {
  if (value === null || value === undefined) return ["–", unit];
  if (unit === "Bq") {
    for (const [f, p] of PREFIXES) if (Math.abs(value) >= f) return [(value / f).toPrecision(5), p + "Bq"];
  }
  if (Number.isInteger(value)) return [String(value), unit];
  return [Math.abs(value) >= 1e6 || (value !== 0 && Math.abs(value) < 1e-3) ? value.toExponential(4) : value.toPrecision(6), unit];
}

function formatAge(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function instrumentCard(name) {
  let card = $(`section.instrument[data-instrument="${CSS.escape(name)}"]`);
  if (card) return card;
  card = el("section", { class: "instrument", "data-instrument": name });
  const h = el("h3");
  h.append(el("span", { class: "name" }, name), el("span", { class: "state" }, "…"));
  card.append(h, el("div", { class: "kind" }), el("div", { class: "error" }), el("table"));
  $("#instruments").append(card);
  return card;
}

function channelRow(card, channel) {
  let row = $(`tr[data-channel="${CSS.escape(channel)}"]`, card);
  if (row) return row;
  row = el("tr", { "data-channel": channel });
  const trend = el("td", { class: "trend-cell" });
  trend.append(el("canvas", { class: "trend", width: 160, height: 32, "data-points": "0" }));
  row.append(el("td", { class: "channel" }, channel), el("td", { class: "value" }, "–"),
    el("td", { class: "unit" }), el("td", { class: "quality" }), el("td", { class: "age" }), trend);
  $("table", card).append(row);
  return row;
}

function showValue(row, v) {
  const [text, unit] = formatValue(v.value, v.unit);
  $(".value", row).textContent = text;
  $(".unit", row).textContent = unit;
  const q = $(".quality", row);
  q.textContent = v.quality + (v.reason ? ` (${v.reason})` : "");
  q.className = "quality q-" + v.quality;
}

function renderStatus(st) {
  $("#where").textContent = `${st.daemon.site} / ${st.daemon.cell}`;
  for (const [name, inst] of Object.entries(st.instruments)) {
    const card = instrumentCard(name);
    const up = inst.state === "connected";
    card.classList.toggle("state-down", !up);
    card.classList.toggle("state-up", up);
    card.dataset.state = inst.state;
    $(".state", card).textContent = up ? "connected" : `disconnected (${inst.state})`;
    $(".kind", card).textContent = [inst.kind, inst.description, `reconnects ${inst.reconnects}`, `parse errors ${inst.parse_errors}`]
      .filter(Boolean).join(" · ");
    $(".error", card).textContent = inst.last_error || "";
    for (const [ch, v] of Object.entries(inst.channels || {})) {
      const row = channelRow(card, ch);
      const key = name + "/" + ch;
      const live = latest.get(key);
      if (!live || live.acq_ns <= v.acq_ns) showValue(row, v);
      $(".age", row).textContent = formatAge(v.age_s);
    }
  }
  const run = st.run;
  const runBox = $("#run");
  if (run && !run.error) {
    runBox.textContent = "";
    for (const k of ["run_id", "batch", "product", "nuclide", "operator", "started_ns"]) {
      if (run[k] === undefined || run[k] === null) continue;
      const value = k === "started_ns" ? new Date(run[k] / 1e6).toLocaleString() : run[k];
      runBox.append(el("div", {}, `${k.replace("_ns", "")}: ${value}`));
    }
    runBox.className = "active";
  } else {
    runBox.textContent = "no active run";
    runBox.className = "";
  }
  const alarms = $("#alarms");
  alarms.textContent = "";
  if (!st.alarms.length) alarms.append(el("li", { class: "none" }, "none"));
  for (const a of st.alarms) alarms.append(el("li", { class: a.severity }, `${a.subject}: ${a.message}`));
  const j = st.journal;
  if (j) {
    $("#journal").textContent = `${j.readings_committed} readings committed since start · ` +
      `${(j.size_bytes / 1e6).toFixed(1)} MB · last commit ${(j.last_commit_s * 1000).toFixed(1)} ms` +
      (j.error ? ` · ERROR ${j.error}` : "");
  }
  const sinks = $("#sinks");
  sinks.textContent = "";
  for (const [name, s] of Object.entries(st.sinks || {})) {
    sinks.append(el("div", {}, `sink ${name}: backlog ${s.backlog ?? "?"}` + (s.last_error ? ` · ${s.last_error}` : "")));
  }
}

function setLink() {
  const link = $("#link");
  const up = streamUp && statusUp;
  link.className = "link " + (up ? "up" : "down");
  link.textContent = up ? "live" : (statusUp ? "stream reconnecting…" : "daemon not answering");
}

async function pollStatus() {
  try {
    const resp = await fetch("/api/status", { cache: "no-store" });
    if (!resp.ok) throw new Error(resp.status);
    renderStatus(await resp.json());
    statusUp = true;
  } catch (e) {
    statusUp = false;
  }
  setLink();
}

function onReadings(list) {
  for (const r of list) {
    if (r.seq <= (lastSeq.get(r.instrument) || 0)) continue;
    lastSeq.set(r.instrument, r.seq);
    const key = r.instrument + "/" + r.channel;
    let s = series.get(key);
    if (!s) series.set(key, (s = []));
    s.push([r.acq_ns / 1e6, r.value, r.quality]);
    latest.set(key, r);
    dirty.add(key);
  }
}

function draw(key) {
  const [instrument, ...rest] = key.split("/");
  const channel = rest.join("/");
  const card = instrumentCard(instrument);
  const row = channelRow(card, channel);
  const r = latest.get(key);
  if (r) showValue(row, r);
  const s = series.get(key);
  const cutoff = Date.now() - WINDOW_MS;
  while (s.length && s[0][0] < cutoff) s.shift();
  const canvas = $("canvas", row);
  canvas.dataset.points = String(s.length);
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const values = s.filter(p => p[1] !== null).map(p => p[1]);
  if (!values.length) return;
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi === lo) { hi += Math.abs(hi) * 0.01 || 1; lo -= Math.abs(lo) * 0.01 || 1; }
  const now = Date.now();
  // Until 10 minutes have been seen, the chart spans what there is (at least 30 s).
  const span = Math.max(30000, Math.min(WINDOW_MS, now - s[0][0]));
  const x = t => ((t - (now - span)) / span) * w;
  const y = v => h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
  ctx.strokeStyle = "#2b6cb0";
  ctx.lineWidth = 1.2;
  ctx.beginPath();
  let pen = false;
  for (const [t, v] of s) {
    if (v === null) { pen = false; continue; }  // a gap stays a gap
    if (pen) ctx.lineTo(x(t), y(v)); else ctx.moveTo(x(t), y(v));
    pen = true;
  }
  ctx.stroke();
  ctx.fillStyle = "#c53030";
  for (const [t, v, q] of s) if (q === "BAD") ctx.fillRect(x(t) - 1, 0, 2, h);
}

function redraw() {
  const keys = dirty;
  dirty = new Set();
  for (const key of keys) draw(key);
}

function connectStream() {
  const minutes = WINDOW_MS / 60000;
  $("#window-min").textContent = String(minutes);
  const source = new EventSource(`/api/stream?format=sse&since=${minutes}m`);
  source.addEventListener("readings", ev => onReadings(JSON.parse(ev.data)));
  source.addEventListener("open", () => { streamUp = true; setLink(); });
  source.addEventListener("error", () => { streamUp = false; setLink(); });
}

pollStatus();
setInterval(pollStatus, STATUS_EVERY_MS);
connectStream();
setInterval(redraw, 500);
setInterval(() => { for (const key of series.keys()) dirty.add(key); }, 5000);
