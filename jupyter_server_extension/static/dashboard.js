// streamchat dashboard: renders the summaries of api/streamchat/metrics/stream (SSE) as tiles,
// uPlot charts and a per-tool table. Untrusted text (tool names, error messages) goes in
// through textContent only. The figures are computed by the server (streamchat.analytics).
import uPlot from "./vendor/uPlot.esm.js";

const $ = (id) => document.getElementById(id);
let latest = null;
const charts = {};

function fmtMs(ms) {
  if (ms == null) return "–";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}
const fmtNum = (x, digits = 1) => (x == null ? "–" : x.toFixed(digits));
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const fmtRate = (x) => (x == null ? "–" : x >= 1000 ? compact.format(x) : x.toFixed(1));
const fmtPct = (x) => (x == null ? "–" : `${(100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0)} %`);

function colors() {
  const css = getComputedStyle(document.documentElement);
  const get = (name) => css.getPropertyValue(name).trim();
  return { fg: get("--fg"), muted: get("--muted"), line: get("--line"), accent: get("--accent"), accent2: get("--accent2"), bad: get("--bad") };
}

function axes(c, yLabel, xValues) {
  const x = { stroke: c.muted, grid: { stroke: c.line, width: 1 }, ticks: { stroke: c.line } };
  if (xValues) x.values = xValues;
  const y = { stroke: c.muted, grid: { stroke: c.line, width: 1 }, ticks: { stroke: c.line }, label: yLabel, size: 60 };
  y.values = (u, splits) => splits.map((v) => compact.format(v));
  return [x, y];
}

function makeChart(key, target, series, yLabel, opts = { pad: 30 }) {
  const width = Math.max(240, target.clientWidth);
  const c = colors();
  const chart = new uPlot(
    {
      width,
      height: 180,
      // half a slot of room at each end, so the first and last bars are whole
      scales: { x: { time: opts.time !== false, range: (u, min, max) => [min - opts.pad, max + opts.pad] }, y: { range: (u, min, max) => [0, Math.max((max || 0) * 1.15, opts.yMin || 1)] } },
      axes: axes(c, yLabel, opts.xValues),
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      series: [{}, ...series.map((s) => ({ ...s, stroke: c[s.color], fill: s.fill ? c[s.color] + "55" : undefined }))],
    },
    [[], ...series.map(() => [])],
    target,
  );
  charts[key] = chart;
  return chart;
}

function buildCharts() {
  for (const chart of Object.values(charts)) chart.destroy();
  const bars = uPlot.paths.bars({ size: [0.8, 40] });
  makeChart("ttft", $("chart-ttft"), [
    { label: "p50", color: "accent", width: 2, points: { show: true, size: 6 }, value: (u, v) => fmtMs(v) },
    { label: "p95", color: "accent2", width: 2, dash: [5, 4], points: { show: true, size: 6 }, value: (u, v) => fmtMs(v) },
  ], "ms");
  makeChart("tps", $("chart-tps"), [{ label: "tokens/s p50", color: "accent", width: 2, points: { show: true, size: 6 }, value: (u, v) => fmtRate(v) }], "tok/s");
  makeChart("turns", $("chart-turns"), [
    { label: "turns/min", color: "accent", paths: bars, fill: true, points: { show: false }, value: (u, v) => fmtNum(v, 0) },
    { label: "failed", color: "bad", paths: bars, fill: true, points: { show: false }, value: (u, v) => fmtNum(v, 0) },
  ], "turns");
  const edges = () => (latest ? latest.tool_histogram.edges_ms : []);
  const binLabel = (i) => {
    const e = edges();
    if (i >= e.length) return `>${fmtMs(e[e.length - 1])}`;
    return `≤${fmtMs(e[i])}`;
  };
  makeChart("tools", $("chart-tools"), [
    { label: "calls", color: "accent", paths: bars, fill: true, points: { show: false }, value: (u, v) => fmtNum(v, 0) },
  ], "calls", { time: false, pad: 0.5, xValues: (u, splits) => splits.map((i) => (Number.isInteger(i) ? binLabel(i) : "")) });
  if (latest) render(latest);
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function renderTiles(summary, w) {
  setText("kpi-turns", String(w.turns));
  setText("kpi-rate", `${fmtNum(w.turns_per_min, 2)} per minute`);
  setText("kpi-ttft-p50", fmtMs(w.ttft_ms.p50));
  setText("kpi-ttft-p95", fmtMs(w.ttft_ms.p95));
  setText("kpi-ttft-p99", `p99 ${fmtMs(w.ttft_ms.p99)}`);
  setText("kpi-tps", fmtRate(w.tokens_per_s.p50));
  setText("kpi-errors", fmtPct(w.error_rate));
  const errors = Object.values(w.errors).reduce((a, b) => a + b, 0);
  setText("kpi-error-count", `${w.reasons.error || 0} failed turns, ${errors} errors`);
  const streams = summary.open_streams.sse + summary.open_streams.websocket;
  setText("kpi-streams", String(streams));
  setText("kpi-active", `${summary.active_turns} turns running`);
}

function renderTable(w) {
  const body = document.querySelector("#tools tbody");
  const rows = w.tools.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.tool = t.tool;
    const cells = [
      [t.tool, "tool"],
      [String(t.calls), "num calls"],
      [fmtPct(t.success_rate), "num success"],
      [fmtMs(t.duration_ms.avg), "num avg"],
      [fmtMs(t.duration_ms.p95), "num p95"],
      [t.paused_ms ? fmtMs(t.paused_ms) : "–", "num paused"],
      [t.last_error || "", "error"],
    ];
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      if (cls === "error") td.title = text;
      tr.append(td);
    }
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 7;
    td.className = "empty";
    td.textContent = "No tool calls in this window.";
    tr.append(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function renderCharts(summary) {
  const s = summary.series;
  charts.ttft.setData([s.t, s.ttft_p50_ms, s.ttft_p95_ms]);
  charts.tps.setData([s.t, s.tokens_per_s_p50]);
  charts.turns.setData([s.t, s.turns_per_min, s.failed]);
  const h = summary.tool_histogram;
  charts.tools.setData([h.total.map((_, i) => i), h.total]);
}

function render(summary) {
  latest = summary;
  const w = summary.windows[$("window").value];
  renderTiles(summary, w);
  renderTable(w);
  renderCharts(summary);
  const where = summary.shared && !summary.partial ? "every server process" : "this server process";
  const who = summary.scope === "server" ? `every user's sessions in ${where}` : `your sessions in ${where}`;
  const partial = summary.partial ? " The shared store cannot be reached: other processes' figures are missing." : "";
  setText("note", `Figures of ${who}; percentiles within ${Math.round(summary.relative_error * 100)} %. Updated ${new Date(summary.now * 1000).toLocaleTimeString()}.${partial}`);
  document.body.dataset.version = String(summary.version);
}

function connect() {
  const source = new EventSource(new URL("../api/streamchat/metrics/stream", window.location.href));
  source.addEventListener("summary", (message) => {
    setText("status", "live");
    render(JSON.parse(message.data));
  });
  source.onerror = () => setText("status", source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
}

$("window").addEventListener("change", () => latest && render(latest));
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", buildCharts);
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const [key, chart] of Object.entries(charts)) chart.setSize({ width: Math.max(240, $(`chart-${key}`).clientWidth), height: 180 });
  }, 100);
});
buildCharts();
connect();
