// The dashboard's flow page: per-minute SVG charts of what the fleet handled, retried and
// let die per queue and plugin, and the plugins' call times. Loaded before app.js, whose
// helpers (state, api, el, show) it uses when the page is shown.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 600, height: 130, left: 44, right: 8, top: 8, bottom: 20 };

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const clock = (ms) => new Date(ms).toISOString().slice(11, 16);
const amount = (v) => v === null || v === undefined ? "none" : Number.isInteger(v) ? String(v) : v.toFixed(2);
const total = (values) => values.reduce((sum, v) => sum + (v || 0), 0);

// A line chart of `lines` ({ name, values: one per minute, null for none }) over the
// minutes of `flow`, each minute's values in its tooltip, with a caption and a legend.
function chart(id, caption, flow, lines, unit) {
  const { width, height, left, right, top, bottom } = CHART;
  const n = flow.minutes;
  const most = Math.max(1, ...lines.flatMap((l) => l.values.filter((v) => v !== null)));
  const x = (i) => left + (n === 1 ? 0 : i * (width - left - right) / (n - 1));
  const y = (v) => top + (height - top - bottom) * (1 - v / most);
  const paths = lines.map((line) => {
    let d = "";
    let pen = "M";
    line.values.forEach((v, i) => {
      if (v === null) { pen = "M"; return; }
      d += pen + x(i).toFixed(1) + " " + y(v).toFixed(1) + " ";
      pen = "L";
    });
    const path = svg("path", { class: "line s-" + line.name, d: d.trim() || "M0 0", "data-series": line.name });
    // A value with no value beside it is a dot: a line needs two.
    const has = (i) => i >= 0 && i < n && line.values[i] !== null;
    const alone = (i) => has(i) && !has(i - 1) && !has(i + 1);
    const dots = line.values.map((v, i) => alone(i) ? svg("circle", { class: "dot s-" + line.name, cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5 }) : null);
    return [path, dots];
  });
  const step = n === 1 ? width - left - right : (width - left - right) / (n - 1);
  const hovers = Array.from({ length: n }, (_, i) => svg("rect", { class: "minute", x: (x(i) - step / 2).toFixed(1), y: top, width: step.toFixed(1), height: height - top - bottom },
    svg("title", {}, clock(flow.from + i * flow.minute_ms) + " UTC: " + lines.map((l) => l.name + " " + amount(l.values[i])).join(", ") + (unit ? " (" + unit + ")" : ""))));
  const axis = [
    svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }),
    svg("text", { class: "tick", x: left - 4, y: top + 8, "text-anchor": "end" }, amount(most)),
    svg("text", { class: "tick", x: left - 4, y: height - bottom, "text-anchor": "end" }, "0"),
    svg("text", { class: "tick", x: left, y: height - 4 }, clock(flow.from)),
    svg("text", { class: "tick", x: width - right, y: height - 4, "text-anchor": "end" }, "now"),
  ];
  return el("figure", { class: "chart", "data-chart": id },
    el("figcaption", {}, caption),
    svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": caption }, axis, paths, hovers),
    el("div", { class: "legend" }, lines.map((l) => el("span", { class: "key s-" + l.name }, l.name))));
}

function outcomesChart(kind, label, series, flow) {
  const lines = ["handled", "retried", "dead"].map((name) => ({ name, values: series[name] }));
  const caption = label + ": " + lines.map((l) => total(l.values) + " " + l.name).join(", ") + " in " + flow.minutes + " min";
  return chart(kind + ":" + (series.source ? series.source + ":" : "") + series.name, caption, flow, lines, "per minute");
}

function callsChart(plugin, flow) {
  const calls = total(plugin.calls);
  const longest = Math.max(0, ...plugin.max_ms.filter((v) => v !== null));
  const caption = (plugin.name || "(no handler)") + " calls: " + calls + ", longest " + amount(longest) + " ms";
  return chart("calls:" + plugin.name, caption, flow, [{ name: "mean", values: plugin.mean_ms }, { name: "max", values: plugin.max_ms }], "ms");
}

async function flow(auto) {
  const view = state.view;
  const minutes = state.flowMinutes || 60;
  const answer = await api("GET", "/api/flow?minutes=" + minutes);
  const shown = JSON.stringify(answer);
  if (view !== state.view || (auto && shown === state.shown)) return;
  state.shown = shown;
  const choose = el("select", { id: "flow-minutes", "aria-label": "minutes shown", onchange: (e) => { state.flowMinutes = Number(e.target.value); refresh(); } },
    [15, 60, 120].map((m) => el("option", { value: m, selected: m === minutes }, "last " + (m === 60 ? "hour" : m === 120 ? "2 hours" : m + " min"))));
  const empty = (what) => el("p", { class: "muted" }, "No " + what + " in this time.");
  show(
    el("h1", {}, "Flow"),
    el("div", { class: "actions" }, choose, el("span", { class: "muted" }, "per minute, every host of the fleet; the last minute so far")),
    el("h2", {}, "Queues"),
    el("div", { class: "charts", id: "flow-queues" }, answer.queues.length ? answer.queues.map((q) => outcomesChart("queue", q.source + " " + q.name, q, answer)) : empty("messages")),
    el("h2", {}, "Plugins"),
    el("div", { class: "charts", id: "flow-plugins" }, answer.plugins.length ? answer.plugins.flatMap((p) => [
      outcomesChart("plugin", p.name || "(no handler)", p, answer),
      total(p.calls) ? callsChart(p, answer) : null,
    ]) : empty("calls")),
  );
}

