// The live page: status every 2 s from /api/status, values from the /api/stream event source,
// alarms from /api/status, completed from /api/alarms (the alarm engine's limits, acknowledged here).
// Plain JavaScript and canvas, no external resources: the line PC may have no internet.
//
// The page must never look healthy when it is not: ages keep counting in the browser between
// updates, a channel older than its instrument's stale_after_s greys out, and when the daemon
// stops answering the whole page turns STALE (greyed, with the time of the last answer).
// Every time is shown in the site's zone with its offset (daemon.timezone of /api/status).
"use strict";

const WINDOW_MS = 10 * 60 * 1000;
const STATUS_EVERY_MS = 2000;
const STATUS_TIMEOUT_MS = 2500;
// No answer from the daemon for this long: the whole page is stale.
const STALE_AFTER_MS = 4000;
const TOKEN_KEY = "hotcell-daq-api-token";

const series = new Map();   // "instrument/channel" -> [[t_ms, value|null, quality], ...]
const lastSeq = new Map();  // instrument -> last sequence number shown (replays overlap)
const latest = new Map();   // "instrument/channel" -> last reading shown (stream or status)
const display = new Map();  // "instrument/channel" -> {decimals, kind, states}
const staleAfter = new Map(); // "instrument/channel" -> stale_after_s (null: reported on change)
const instrumentUp = new Map(); // instrument -> connected
let dirty = new Set();
let streamUp = false;
let lastAnswerMs = null;    // browser time of the last status answer
const loadedMs = Date.now(); // a first answer has until STALE_AFTER_MS after loading
let skewMs = 0;             // daemon clock minus browser clock, from the last status
let offsetS = null;         // the site's UTC offset (s), from the last status
let lastStatus = null;
let alarmsApi = true;       // false once /api/alarms answered 404 (a daemon without it)

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// -- time, in the site's zone -------------------------------------------------------------

const daemonNow = () => Date.now() + skewMs;

function offsetText(s) {
  const sign = s < 0 ? "-" : "+";
  const a = Math.abs(s);
  return `${sign}${String(Math.floor(a / 3600)).padStart(2, "0")}:${String(Math.floor(a % 3600 / 60)).padStart(2, "0")}`;
}

// "hh:mm:ss" (or "YYYY-MM-DD hh:mm:ss") in the site's zone, with its offset.
function siteTime(ms, withDate = false) {
  if (ms === null || ms === undefined || offsetS === null) return "–";
  const iso = new Date(ms + offsetS * 1000).toISOString();
  const t = withDate ? iso.slice(0, 10) + " " + iso.slice(11, 19) : iso.slice(11, 19);
  return t + offsetText(offsetS);
}

function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(sec).padStart(2, "0")}`;
}

function formatAge(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// -- values ------------------------------------------------------------------------------

const PREFIXES = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];

function decimalsOf(key, unit) {
  const d = display.get(key);
  return d && Number.isInteger(d.decimals) ? d.decimals : (unit === "" ? 0 : 2);
}

// [text, unit] of a value at its channel's resolution; Bq scaled to kBq/MBq/GBq.
function formatValue(key, value, unit, text) {
  const d = display.get(key) || {};
  if (value === null || value === undefined) return [text || "–", unit];
  if (d.kind === "state") return [text || (d.states || {})[String(value)] || String(value), ""];
  const digits = decimalsOf(key, unit);
  if (unit === "Bq") {
    for (const [f, p] of PREFIXES) if (Math.abs(value) >= f) return [(value / f).toFixed(digits), p + "Bq"];
  }
  return [value.toFixed(digits), unit];
}

// -- the instruments' cards -----------------------------------------------------------------

function instrumentCard(name) {
  let card = $(`section.instrument[data-instrument="${CSS.escape(name)}"]`);
  if (card) return card;
  card = el("section", { class: "instrument", "data-instrument": name });
  const h = el("h3");
  h.append(el("span", { class: "name" }, name), el("span", { class: "state" }, "…"));
  card.append(h, el("div", { class: "kind" }), el("div", { class: "error" }), el("div", { class: "chips" }), el("table"));
  $("#instruments").append(card);
  return card;
}

function chip(card, channel) {
  let c = $(`.chip[data-channel="${CSS.escape(channel)}"]`, card);
  if (c) return c;
  c = el("span", { class: "chip", "data-channel": channel }, channel);
  $(".chips", card).append(c);
  return c;
}

function channelRow(card, channel) {
  let row = $(`tr[data-channel="${CSS.escape(channel)}"]`, card);
  if (row) return row;
  row = el("tr", { "data-channel": channel });
  const trend = el("td", { class: "trend-cell" });
  const canvas = el("canvas", { class: "trend", width: 180, height: 40, "data-points": "0" });
  canvas.addEventListener("mousemove", ev => hover(canvas, ev));
  canvas.addEventListener("mouseleave", () => { $("#tip").hidden = true; });
  trend.append(canvas);
  row.append(el("td", { class: "channel", title: channel }, channel), el("td", { class: "value" }, "–"),
    el("td", { class: "unit" }), el("td", { class: "quality" }), el("td", { class: "age" }), trend);
  $("table", card).append(row);
  return row;
}

// Show one reading (from the stream or the status) where its channel is drawn.
function showValue(instrument, channel, v) {
  const key = instrument + "/" + channel;
  const card = instrumentCard(instrument);
  const d = display.get(key) || {};
  const text = v.text ?? v.attrs?.text ?? null;
  latest.set(key, { acq_ns: v.acq_ns, quality: v.quality, value: v.value, unit: v.unit, reason: v.reason, text });
  // Until the status has said how a channel is shown (a flag, a state, a number), nothing is
  // drawn for it: the stream can answer before the first status does.
  if (!display.has(key)) return;
  if (d.kind === "flag") {
    $(`tr[data-channel="${CSS.escape(channel)}"]`, card)?.remove();
    const c = chip(card, channel);
    const on = v.value !== null && v.value !== undefined && v.value !== 0;
    c.className = "chip " + (v.quality !== "GOOD" ? "q-" + v.quality : on ? "on" : "off");
    c.textContent = `${channel} ${v.value === null ? "?" : on ? "ON" : "off"}`;
    c.dataset.value = v.value === null ? "" : String(v.value);
    return;
  }
  const row = channelRow(card, channel);
  const [shown, unit] = formatValue(key, v.value, v.unit, text);
  $(".value", row).textContent = shown;
  $(".value", row).title = shown;
  $(".value", row).classList.toggle("state-value", d.kind === "state");
  $(".unit", row).textContent = unit;
  const q = $(".quality", row);
  q.textContent = v.quality === "GOOD" ? "GOOD" : v.quality + (v.reason ? ` (${v.reason})` : "");
  q.className = "quality q-" + v.quality;
  q.title = q.textContent;
}

// Ages count on in the browser; a channel older than its instrument's stale_after_s greys out.
function tickAges() {
  const now = daemonNow();
  for (const [key, r] of latest) {
    const [instrument, ...rest] = key.split("/");
    const channel = rest.join("/");
    const card = instrumentCard(instrument);
    const age = Math.max(0, (now - r.acq_ns / 1e6) / 1000);
    const limit = staleAfter.has(key) ? staleAfter.get(key) : 10;
    const stale = instrumentUp.get(instrument) === false || (limit !== null && age > limit);
    if (!display.has(key)) continue;
    const target = display.get(key).kind === "flag" ? chip(card, channel) : channelRow(card, channel);
    target.classList.toggle("stale", stale);
    if (target.tagName === "TR") $(".age", target).textContent = formatAge(age);
    else target.title = `${channel}: ${formatAge(age)} old`;
  }
  const stale = Date.now() - (lastAnswerMs ?? loadedMs) > STALE_AFTER_MS;
  document.body.classList.toggle("stale", stale);
  const banner = $("#stale");
  banner.hidden = !stale;
  if (stale) {
    banner.textContent = lastAnswerMs === null
      ? "STALE: the daemon has not answered since this page was loaded"
      : `STALE since ${siteTime(lastAnswerMs + skewMs)}: the daemon is not answering; the values shown are the last it sent`;
  }
  setLink(stale);
  renderProcess();
}

// -- the process header ------------------------------------------------------------------

// The channel `name` of the process instrument (daemon.process_instrument), else of any.
function channelValue(name) {
  const main = lastStatus?.daemon?.process_instrument;
  let found = [null, null];
  for (const [key, r] of latest) {
    const [instrument, ...rest] = key.split("/");
    if (rest.join("/") !== name) continue;
    if (instrument === main) return [key, r];
    if (!found[0]) found = [key, r];
  }
  return found;
}

function renderProcess() {
  const st = lastStatus;
  const box = $("#process");
  if (!st) return;
  const run = st.run && !st.run.error ? st.run : null;
  const now = daemonNow();
  const fields = [];
  fields.push(["run", run ? run.run_id : "no active run"]);
  if (run) {
    fields.push(["batch", run.batch ?? "–"]);
    fields.push(["started", siteTime(run.started_ns / 1e6, true)]);
    fields.push(["run elapsed", duration((now - run.started_ns / 1e6) / 1000)]);
    const t0 = (run.t0 || []).at(-1);
    fields.push(["t0", t0 ? siteTime(t0.ts_ns / 1e6) : "–"]);
  }
  let [key, r] = channelValue("step_name");
  if (!r) [key, r] = channelValue("step_number");
  if (r) fields.push(["step", formatValue(key, r.value, "", r.text)[0]]);
  [key, r] = channelValue("step_elapsed");
  if (r && r.value !== null) fields.push(["step elapsed", duration(r.value)]);
  // Key activities: the dose calibrators' (journaled in Bq) and the process instrument's probes.
  const main = lastStatus?.daemon?.process_instrument;
  const acts = [];
  for (const [k, v] of latest) {
    const unit = lastUnit.get(k) || "";
    const fromMain = k.startsWith(main + "/") && /Bq$/.test(unit);
    if (v.value === null || !(unit === "Bq" || fromMain)) continue;
    const [text, u] = formatValue(k, v.value, unit);
    acts.push([k, `${text} ${u}`]);
  }
  box.textContent = "";
  for (const [label, value] of fields) box.append(field(label, value));
  const a = el("div", { class: "activities" });
  for (const [label, value] of acts) a.append(field(label, value));
  if (acts.length) box.append(a);
}

function field(label, value) {
  const f = el("div", { class: "field", "data-field": label });
  f.append(el("span", { class: "label" }, label), el("span", { class: "v" }, String(value)));
  return f;
}

const lastUnit = new Map();

// -- status ------------------------------------------------------------------------------

function renderStatus(st) {
  lastStatus = st;
  skewMs = st.now_ns / 1e6 - Date.now();
  offsetS = st.daemon.utc_offset_s ?? 0;
  $("#where").textContent = `${st.daemon.site} / ${st.daemon.cell}`;
  $("#zone").textContent = st.daemon.zone || "";
  for (const [name, inst] of Object.entries(st.instruments)) {
    const card = instrumentCard(name);
    const up = inst.state === "connected";
    instrumentUp.set(name, up);
    card.classList.toggle("state-down", !up);
    card.classList.toggle("state-up", up);
    card.dataset.state = inst.state;
    $(".state", card).textContent = up ? "connected" : `disconnected (${inst.state})`;
    $(".kind", card).textContent = [inst.kind, inst.description, `reconnects ${inst.reconnects}`, `parse errors ${inst.parse_errors}`]
      .filter(Boolean).join(" · ");
    $(".error", card).textContent = inst.last_error || "";
    for (const [ch, v] of Object.entries(inst.channels || {})) {
      const key = name + "/" + ch;
      display.set(key, { decimals: v.decimals, kind: v.kind, states: v.states || {}, steps: !!v.steps });
      staleAfter.set(key, v.stale_after_s === undefined ? inst.stale_after_s ?? 10 : v.stale_after_s);
      lastUnit.set(key, v.unit);
      const live = latest.get(key);
      showValue(name, ch, live && live.acq_ns > v.acq_ns ? live : v);
    }
  }
  renderAlarms(st.alarms || []);
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

function setLink(stale) {
  const link = $("#link");
  const up = streamUp && !stale;
  link.className = "link " + (up ? "up" : "down");
  link.textContent = up ? "live" : (stale ? "daemon not answering" : "stream reconnecting…");
}

async function getJson(path) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), STATUS_TIMEOUT_MS);
  try {
    const resp = await fetch(path, { cache: "no-store", signal: ctl.signal });
    return resp;
  } finally {
    clearTimeout(timer);
  }
}

async function pollStatus() {
  if (alarmsApi) await pollAlarms();  // first, so the status draws the banner complete
  try {
    const resp = await getJson("/api/status");
    if (!resp.ok) throw new Error(resp.status);
    renderStatus(await resp.json());
    lastAnswerMs = Date.now();
  } catch (e) {
    // No answer: tickAges turns the page stale once STALE_AFTER_MS has passed.
  }
  tickAges();
}

// -- alarms ------------------------------------------------------------------------------
// The banner lists the alarms of /api/status (limits of the alarm engine, with their id, and
// the derived ones: instruments not connected, BAD values, journal and sink trouble), each limit
// alarm completed from /api/alarms (when raised, its value, whether acknowledged).

async function pollAlarms() {
  try {
    const resp = await getJson("/api/alarms");
    if (resp.status === 404) { alarmsApi = false; return; }
    if (!resp.ok) return;
    const body = await resp.json();
    alarmDetails = new Map((body.active || []).map(a => [a.id, a]));
  } catch (e) { /* the status poll shows the daemon's absence */ }
}

let alarmDetails = new Map();

function renderAlarms(list) {
  const banner = $("#alarms");
  const ul = $("#alarm-list");
  ul.textContent = "";
  const urgent = list.some(a => a.severity === "alarm");
  banner.classList.toggle("active", urgent);
  banner.classList.toggle("quiet", !list.length);
  $("#alarm-count").textContent = list.length ? `${list.length} active` : "none";
  for (const s of list) {
    const a = { ...s, ...(s.id !== undefined ? alarmDetails.get(s.id) || {} : {}) };
    const acked = a.acknowledged === true || a.state === "acknowledged active";
    const li = el("li", { class: String(s.severity || "alarm") + (acked ? " acked" : "") });
    if (a.id !== undefined) li.dataset.alarmId = String(a.id);
    li.append(el("span", { class: "sev" }, String(a.priority || s.severity || "alarm")));
    const value = a.value !== undefined && a.value !== null && a.unit !== undefined
      ? ` (${formatValue(`${a.instrument}/${a.channel}`, a.value, a.unit)[0]} ${a.unit})` : "";
    li.append(el("span", { class: "what" }, `${s.subject}: ${s.message}${value}`));
    if (a.raised_ns) li.append(el("span", { class: "when" }, "since " + siteTime(a.raised_ns / 1e6)));
    if (a.id !== undefined && !acked) {
      const b = el("button", { type: "button", class: "ack" }, "acknowledge");
      b.addEventListener("click", () => acknowledge(a.id));
      li.append(b);
    } else if (acked) {
      li.append(el("span", { class: "when" }, `acknowledged${a.acked_by ? " by " + a.acked_by : ""}`));
    }
    ul.append(li);
  }
}

async function acknowledge(id) {
  let token = sessionStorage.getItem(TOKEN_KEY) || $("#token").value.trim();
  if (!token) { $("#ack-msg").textContent = "paste the API token first"; $("#token").focus(); return; }
  sessionStorage.setItem(TOKEN_KEY, token);
  const comment = $("#ack-comment").value.trim() || "acknowledged from the live page";
  const actor = $("#ack-actor").value.trim() || "live page";
  const resp = await fetch(`/api/alarms/${encodeURIComponent(id)}/ack`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": `Bearer ${token}` },
    body: JSON.stringify({ comment, actor }),
  });
  if (resp.status === 401 || resp.status === 403) sessionStorage.removeItem(TOKEN_KEY);
  $("#ack-msg").textContent = resp.ok ? `alarm ${id} acknowledged` : `not acknowledged: HTTP ${resp.status}`;
  tokenBox();
  await pollStatus();
}

function tokenBox() {
  const has = !!sessionStorage.getItem(TOKEN_KEY);
  $("#token").hidden = has;
  $("#forget").hidden = !has;
}

// -- trends ------------------------------------------------------------------------------

function onReadings(list) {
  for (const r of list) {
    if (r.seq <= (lastSeq.get(r.instrument) || 0)) continue;
    lastSeq.set(r.instrument, r.seq);
    const key = r.instrument + "/" + r.channel;
    let s = series.get(key);
    if (!s) series.set(key, (s = []));
    s.push([r.acq_ns / 1e6, r.value, r.quality]);
    lastUnit.set(key, r.unit);
    showValue(r.instrument, r.channel, r);
    dirty.add(key);
  }
}

function geometry(canvas) {
  const key = canvas.dataset.key;
  const s = series.get(key) || [];
  const now = daemonNow();
  const span = Math.max(30000, Math.min(WINDOW_MS, s.length ? now - s[0][0] : 0));
  const values = s.filter(p => p[1] !== null).map(p => p[1]);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi === lo) { hi += Math.abs(hi) * 0.01 || 1; lo -= Math.abs(lo) * 0.01 || 1; }
  const w = canvas.width, h = canvas.height - 11;  // the bottom 11 px hold the time axis
  return { s, now, span, lo, hi, w, h, x: t => ((t - (now - span)) / span) * w, y: v => h - 2 - ((v - lo) / (hi - lo)) * (h - 4) };
}

function draw(key) {
  const [instrument, ...rest] = key.split("/");
  const channel = rest.join("/");
  if (!display.has(key)) { dirty.add(key); return; }  // drawn once the status has come
  const kind = display.get(key).kind;
  if (kind === "flag") return;  // a chip, no trend
  const row = channelRow(instrumentCard(instrument), channel);
  const s = series.get(key);
  const cutoff = daemonNow() - WINDOW_MS;
  while (s.length && s[0][0] < cutoff) s.shift();
  const canvas = $("canvas", row);
  canvas.dataset.key = key;
  canvas.dataset.points = String(s.length);
  // Drawn at the size the layout gives it (the trend column widens with the card).
  const width = Math.max(60, Math.round(canvas.clientWidth || 180));
  if (canvas.width !== width) canvas.width = width;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!s.some(p => p[1] !== null)) return;
  const g = geometry(canvas);
  // Time axis: a tick at each end and in the middle, in the site's zone.
  ctx.fillStyle = "#666";
  ctx.font = "9px system-ui, sans-serif";
  ctx.strokeStyle = "#ccc";
  ctx.beginPath(); ctx.moveTo(0, g.h + 0.5); ctx.lineTo(g.w, g.h + 0.5); ctx.stroke();
  for (const [frac, align] of [[0, "left"], [0.5, "center"], [1, "right"]]) {
    ctx.textAlign = align;
    ctx.fillText(siteTime(g.now - g.span * (1 - frac)).slice(0, 8), frac * g.w, g.h + 10);
  }
  ctx.strokeStyle = "#2b6cb0";
  ctx.lineWidth = 1.2;
  ctx.beginPath();
  // Discrete values (states, counters) hold until the next one: drawn as steps.
  const step = kind === "state" || display.get(key).steps;
  let pen = false, lastY = 0;
  for (const [t, v] of g.s) {
    if (v === null) { pen = false; continue; }  // a gap stays a gap
    const X = g.x(t), Y = g.y(v);
    if (pen) { if (step) ctx.lineTo(X, lastY); ctx.lineTo(X, Y); } else ctx.moveTo(X, Y);
    pen = true; lastY = Y;
  }
  if (pen && step) ctx.lineTo(g.x(g.now), lastY);
  ctx.stroke();
  ctx.fillStyle = "#c53030";
  for (const [t, v, q] of g.s) if (q === "BAD") ctx.fillRect(g.x(t) - 1, 0, 2, g.h);
}

// Hover: the reading nearest the pointer, its time and value.
function hover(canvas, ev) {
  const key = canvas.dataset.key;
  const tip = $("#tip");
  if (!key || !series.get(key)?.length) { tip.hidden = true; return; }
  const g = geometry(canvas);
  const rect = canvas.getBoundingClientRect();
  const t = g.now - g.span + ((ev.clientX - rect.left) / rect.width) * g.span;
  let best = null;
  for (const p of g.s) if (!best || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
  const [text, unit] = formatValue(key, best[1], lastUnit.get(key) || "");
  tip.textContent = `${siteTime(best[0])}  ${text} ${unit}` + (best[2] !== "GOOD" ? ` ${best[2]}` : "");
  tip.hidden = false;
  tip.style.left = `${Math.min(ev.pageX + 12, document.documentElement.clientWidth - tip.offsetWidth - 4)}px`;
  tip.style.top = `${ev.pageY + 14}px`;
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
  source.addEventListener("open", () => { streamUp = true; });
  source.addEventListener("error", () => { streamUp = false; });
}

$("#token").addEventListener("change", () => {
  const v = $("#token").value.trim();
  if (v) sessionStorage.setItem(TOKEN_KEY, v);
  $("#token").value = "";
  tokenBox();
});
$("#forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); tokenBox(); });
tokenBox();
pollStatus();
setInterval(pollStatus, STATUS_EVERY_MS);
connectStream();
setInterval(redraw, 500);
setInterval(tickAges, 500);
setInterval(() => { for (const key of series.keys()) dirty.add(key); }, 5000);
