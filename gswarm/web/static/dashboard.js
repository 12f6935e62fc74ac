// Gswarm dashboard: live overview over server-sent events, market pages from the JSON API.
"use strict";
const $ = (id) => document.getElementById(id);
const fmt = (x, d = 0) => (x == null ? "–" : Number(x).toLocaleString(undefined, { maximumFractionDigits: d }));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

let rateChart = null, probChart = null, last = null;
const series = [[], [], []]; // time, ticks/s, lag

function chart(el, labels, data) {
  const width = Math.max((el.parentElement.clientWidth || 632) - 32, 300);
  const opts = { width, height: 220, series: [{}].concat(labels.map((l, i) => ({ label: l, stroke: ["#3467d6", "#d65f34"][i], scale: i ? "lag" : "y" }))),
    axes: [{}, { scale: "y" }].concat(labels.length > 1 ? [{ side: 1, scale: "lag", grid: { show: false } }] : []) };
  return new uPlot(opts, data, el);
}

// once the tables beside a chart are filled its panel may be narrower: fit it again
function fit(plot, el) {
  const width = Math.max(el.parentElement.clientWidth - 32, 300);
  if (plot && Math.abs(plot.width - width) > 2) plot.setSize({ width, height: 220 });
}
window.addEventListener("resize", () => { fit(rateChart, $("rate-chart")); fit(probChart, $("prob-chart")); });

function onSnapshot(doc) {
  if (doc.error) { $("status").textContent = doc.error; return; }
  $("status").textContent = "live · " + new Date(doc.t * 1000).toLocaleTimeString();
  $("unique-markets").textContent = fmt(doc.unique_markets);
  $("unique-traders").textContent = fmt(doc.unique_traders);
  $("ticks").textContent = fmt(doc.ticks);
  $("lag").textContent = fmt(doc.lag);
  const p99 = doc.arrival_lag_ms && doc.arrival_lag_ms.p99;
  $("arrival").textContent = p99 == null ? "–" : fmt(p99) + " ms";
  $("dead").textContent = fmt(doc.dead_letters_total);
  $("signals-total").textContent = fmt(doc.signals_total);
  refreshSignals();
  const rate = last ? (doc.ticks - last.ticks) / Math.max(doc.t - last.t, 1e-3) : 0;
  last = doc;
  $("rate").textContent = fmt(rate);
  $("hot").querySelector("tbody").innerHTML = doc.hot.map((h, i) =>
    `<tr><td>${i + 1}</td><td><a href="#/market/${encodeURIComponent(h.market)}">${esc(h.market)}</a></td><td class="num">${fmt(h.ticks)}</td></tr>`).join("");
  series[0].push(doc.t); series[1].push(rate); series[2].push(doc.lag);
  if (series[0].length > 300) series.forEach((s) => s.shift());
  if (!rateChart) rateChart = chart($("rate-chart"), ["ticks/s", "behind"], series);
  else rateChart.setData(series);
  if (currentMarket()) refreshMarket(currentMarket());
}

// one signal's values in a few words
const summary = (s) => Object.entries(s.values || {}).map(([k, v]) =>
  `${esc(k)}=${typeof v === "number" ? fmt(v, 3) : esc(v)}`).join(" ");
const utc = (ts) => new Date(ts).toISOString().replace("T", " ").slice(0, 19);
const marketLink = (m) => `<a href="#/market/${encodeURIComponent(m)}">${esc(m)}</a>`;
const seenSignals = new Set();
let signalsBusy = false, signalsLoaded = false;

// the newest signals, cluster-wide (/api/signals), every snapshot; new rows highlighted
async function refreshSignals() {
  if (signalsBusy) return;
  signalsBusy = true;
  try {
    const doc = await getJSON("/api/signals?limit=20");
    const first = !signalsLoaded;
    signalsLoaded = true;
    $("signals").querySelector("tbody").innerHTML = doc.signals.map((s) => {
      const fresh = !first && !seenSignals.has(s.id);
      seenSignals.add(s.id);
      return `<tr class="${fresh ? "fresh" : ""}" data-id="${esc(s.id)}"><td>${utc(s.ts)}</td>` +
        `<td>${esc(s.rule)} <span class="kind">${esc(s.kind)}</span></td>` +
        `<td>${marketLink(s.market)}${s.question ? " · " + esc(s.question) : ""}</td>` +
        `<td>${summary(s)}</td></tr>`;
    }).join("");
  } catch (err) {
    $("signals").querySelector("tbody").innerHTML = `<tr><td colspan="4">${esc(err.message)}</td></tr>`;
  } finally {
    signalsBusy = false;
  }
}

// a market's probability with its signals as markers (a points-only series)
function probData(pts, signals) {
  const at = new Map(signals.map((s) => [s.ts, s]));
  const marks = pts.map((p) => (at.has(p.ts) ? p.value : null));
  return [pts.map((p) => p.ts / 1000), pts.map((p) => p.value), marks];
}

function probPlot(el, data) {
  const width = Math.max((el.parentElement.clientWidth || 632) - 32, 300);
  return new uPlot({ width, height: 220, series: [{},
    { label: "probability", stroke: "#3467d6" },
    { label: "signals", stroke: "#d63434", fill: "#d63434", paths: () => null,
      points: { show: true, size: 9, stroke: "#d63434", fill: "#d63434" } }] }, data, el);
}

function currentMarket() {
  const m = location.hash.match(/^#\/market\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

// The API token (GSWARM_API_TOKEN), asked once when the worker answers 401 and kept for
// this browser tab's session only.
const TOKEN_KEY = "gswarm-api-token";

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

function askToken(message) {
  const token = window.prompt(message + "\nAPI token (GSWARM_API_TOKEN):");
  if (token) sessionStorage.setItem(TOKEN_KEY, token.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
  return Boolean(token);
}

// fetch with the token; on a 401 ask for it once and try again
async function authFetch(path) {
  let r = await fetch(path, { headers: authHeaders() });
  if (r.status === 401) {
    const doc = await r.json();
    if (askToken(doc.error)) r = await fetch(path, { headers: authHeaders() });
  }
  return r;
}

async function getJSON(path) {
  const r = await authFetch(path);
  const doc = await r.json();
  if (!r.ok) throw new Error(doc.error || r.statusText);
  return doc;
}

async function refreshMarket(market) {
  const q = encodeURIComponent(market);
  try {
    const [latest, history, similar, signals] = await Promise.all([
      getJSON(`/api/markets/${q}`), getJSON(`/api/markets/${q}/history?limit=10000`),
      getJSON(`/api/similar/${q}?k=8`), getJSON(`/api/signals?market=${q}&limit=1000`)]);
    const question = (latest.meta || {})["market/question"];
    $("market-title").textContent = question ? `${market}: ${question}` : market;
    const pts = history.points;
    const data = probData(pts, signals.signals);
    $("prob-chart").dataset.points = String(pts.length);
    $("prob-chart").dataset.markers = String(data[2].filter((v) => v !== null).length);
    if (!probChart) probChart = probPlot($("prob-chart"), data);
    else probChart.setData(data);
    $("market-signals").querySelector("tbody").innerHTML = signals.signals.map((s) =>
      `<tr data-id="${esc(s.id)}"><td>${utc(s.ts)}</td><td>${esc(s.rule)}</td><td>${summary(s)}</td></tr>`).join("");
    const rows = ["prob", "ts", "volume", "trader", "outcome", "source", "ticks"];
    $("latest").querySelector("tbody").innerHTML = rows.map((k) =>
      `<tr><td>${k}</td><td class="num">${esc(k === "ts" ? new Date(latest.ts).toISOString() : latest[k])}</td></tr>`).join("");
    $("alpha").querySelector("tbody").innerHTML = Object.entries(latest.alpha || {}).map(([k, v]) =>
      `<tr><td>${esc(k)}</td><td class="num">${fmt(v, 4)}</td></tr>`).join("");
    $("similar").querySelector("tbody").innerHTML = similar.similar.map((h) =>
      `<tr><td><a href="#/market/${encodeURIComponent(h.market)}">${esc(h.market)}</a></td><td class="num">${fmt(h.score, 4)}</td></tr>`).join("");
    fit(probChart, $("prob-chart"));
  } catch (err) {
    $("market-title").textContent = `${market}: ${err.message}`;
  }
}

function route() {
  const market = currentMarket();
  $("market").hidden = !market;
  if (probChart) { probChart.destroy(); probChart = null; }
  if (market) refreshMarket(market);
}

window.addEventListener("hashchange", route);
route();
// server-sent events read through fetch (EventSource cannot send the token)
async function follow() {
  for (;;) {
    try {
      const r = await authFetch("/api/events");
      if (!r.ok) throw new Error((await r.json()).error || r.statusText);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const events = buffer.split("\n\n");
        buffer = events.pop();
        for (const e of events) if (e.startsWith("data: ")) onSnapshot(JSON.parse(e.slice(6)));
      }
      $("status").textContent = "reconnecting…";
    } catch (err) {
      $("status").textContent = "reconnecting… (" + err.message + ")";
    }
    await new Promise((done) => setTimeout(done, 2000));
  }
}
follow();
