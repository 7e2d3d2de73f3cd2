// The wharf dashboard: a client of the admin API (the flow page's charts: flow.js). The token lives in this tab's
// sessionStorage and goes out as the bearer header; every value from the server is put
// on the page as text, never as markup.
"use strict";

const REFRESH_MS = 3000;
// `view` counts what the page shows: a page that loads while the operator moved on (a
// detail opened, another page) is dropped rather than shown over it.
const state = { token: sessionStorage.getItem("wharf-token"), scope: null, page: null, timer: null, view: 0, filter: {}, before: [], notice: "", selected: new Set(), shown: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(method, path, body, raw) {
  const headers = { Authorization: "Bearer " + state.token };
  const init = { method, headers };
  if (raw !== undefined) { init.body = raw; headers["Content-Type"] = "application/wasm"; }
  else if (body !== undefined) { init.body = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => ({ error: "the answer was not JSON (" + response.status + ")" }));
  if (response.status === 401) { signOut(answer.error); throw new Error(answer.error); }
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

const canOperate = () => state.scope === "operate";
const ago = (ms) => ms === null || ms === undefined ? "" : (Math.max(0, Date.now() - ms) / 1000).toFixed(1) + " s ago";
const seconds = (s) => s === null || s === undefined ? "" : s.toFixed(1) + " s";
const time = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);
const short = (sha) => (sha || "").slice(0, 12);

function table(columns, rows, onRow) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : null }, c.title)))),
    el("tbody", {}, rows.map((row) => el("tr", onRow ? { class: "clickable", onclick: () => onRow(row) } : {},
      columns.map((c) => el("td", { class: c.num ? "num" : c.wrap ? "wrap" : null }, c.value(row))))))));
}

function show(...nodes) {
  document.getElementById("page").replaceChildren(...nodes);
}

function problem(error) {
  return el("p", { class: "error", role: "alert" }, String(error.message || error));
}

// --- pages -----------------------------------------------------------------------

async function overview() {
  const view = state.view;
  const [queues, ready, plugins] = await Promise.all([
    api("GET", "/api/queues"),
    fetch("/api/health/ready").then((r) => r.json()),
    api("GET", "/api/plugins"),
  ]);
  if (view !== state.view) return;
  const checks = Object.entries(ready.checks || {}).map(([name, value]) =>
    el("span", { class: value === "ok" || value === "not used" ? "ok" : "bad" }, name + ": " + value, "  "));
  const hosts = {};
  for (const report of plugins.hosts) hosts[report.host] = Math.max(hosts[report.host] || 0, report.reported_at);
  show(
    el("h1", {}, "Overview"),
    el("div", { class: "card", id: "readiness" }, el("strong", {}, ready.status === "ready" ? "Ready" : "Not ready"), " — ", checks),
    el("h2", {}, "Queues"),
    el("div", { id: "queues" }, table([
      { title: "Queue", value: (q) => q.name },
      { title: "Source", value: (q) => q.source },
      { title: "Ready", num: true, value: (q) => q.ready ?? (q.source === "amqp" ? q.message_count : null) ?? "" },
      { title: "Lag", num: true, value: (q) => q.lag ?? "" },
      { title: "In flight", num: true, value: (q) => q.in_flight ?? "" },
      { title: "Scheduled", num: true, value: (q) => q.scheduled ?? "" },
      { title: "Failed", num: true, value: (q) => q.failed ?? "" },
      { title: "Oldest", num: true, value: (q) => seconds(q.oldest_age_seconds) },
      { title: "Handled/min", num: true, value: (q) => q.handled_per_minute ?? "" },
      { title: "Consumers", num: true, value: (q) => q.consumer_count ?? "" },
      { title: "Lag by partition", wrap: true, value: (q) => (q.partitions || []).map((p) => p.partition + ": " + p.lag).join("  ") },
      { title: "", wrap: true, value: (q) => q.error || "" },
    ], queues, (q) => { state.filter = { queue: q.name }; go("failed"); })),
    el("h2", {}, "Hosts"),
    el("div", { id: "hosts" }, table([
      { title: "Host", value: (h) => h[0] },
      { title: "Last report", value: (h) => ago(h[1]) },
    ], Object.entries(hosts))),
  );
}

const FILTERS = ["plugin", "plugin_version", "kind", "queue", "source", "error", "status", "since", "until"];

function query(extra) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries({ ...state.filter, ...extra })) if (value) params.set(key, value);
  return params.toString();
}

async function bulk(action, selection, total) {
  const verb = action === "retry" ? "Retry" : "Delete";
  if (!confirm(verb + " " + total + " failed message" + (total === 1 ? "" : "s") + "?")) return;
  let done = 0;
  for (;;) {
    const answer = await api("POST", "/api/messages/" + action, selection);
    done += action === "retry" ? answer.retried : answer.deleted;
    if (!answer.more || selection.ids) break;
  }
  state.notice = (action === "retry" ? "Retried " : "Deleted ") + done + ".";
}

// Whether the operator is at work on the failed list: messages selected, or a filter
// being typed; the list is not refreshed under them.
function busy() {
  const form = document.getElementById("filters");
  if (state.selected.size || !form) return state.selected.size > 0;
  return form.contains(document.activeElement) || FILTERS.some((f) => form.elements[f].value.trim() !== (state.filter[f] || ""));
}

async function failed(auto) {
  if (auto && busy()) return;
  const view = state.view;
  const page = await api("GET", "/api/messages/failed?" + query({ before: state.before[state.before.length - 1], limit: 50 }));
  const shown = JSON.stringify([state.filter, state.before, page]);
  if (view !== state.view || (auto && (shown === state.shown || busy()))) return;
  state.shown = shown;
  const selected = state.selected = new Set();
  const filterForm = el("form", { class: "filters", id: "filters", onsubmit: (e) => {
    e.preventDefault();
    state.filter = Object.fromEntries(FILTERS.map((f) => [f, e.target.elements[f].value.trim()]).filter(([, v]) => v));
    state.before = [];
    state.notice = "";
    refresh();
  } }, FILTERS.map((f) => el("label", {}, f.replace("_", " "), el("input", { name: f, value: state.filter[f] || "", placeholder: f === "since" || f === "until" ? "2026-12-01" : f === "status" ? "failed" : "" }))),
  el("button", { type: "submit" }, "Filter"));
  const selection = () => ({ filter: state.filter, all: Object.keys(state.filter).length === 0 });
  const actions = canOperate() ? el("div", { class: "actions" },
    el("button", { id: "retry-selected", class: "secondary", onclick: () => bulk("retry", { ids: [...selected] }, selected.size).then(refresh).catch(report) }, "Retry selected"),
    el("button", { id: "delete-selected", class: "secondary", onclick: () => bulk("delete", { ids: [...selected] }, selected.size).then(refresh).catch(report) }, "Delete selected"),
    el("button", { id: "retry-all", onclick: () => bulk("retry", selection(), page.total).then(refresh).catch(report) }, "Retry all " + page.total + " matching"),
    el("button", { id: "delete-all", class: "danger", onclick: () => bulk("delete", selection(), page.total).then(refresh).catch(report) }, "Delete all " + page.total + " matching"),
  ) : null;
  const columns = [
    { title: "Id", value: (f) => f.id },
    { title: "Status", value: (f) => f.status },
    { title: "Failed at", value: (f) => time(f.failed_at) },
    { title: "Kind", value: (f) => f.kind },
    { title: "Plugin", value: (f) => f.plugin ? f.plugin + "@" + f.plugin_version : "(no handler)" },
    { title: "Source", value: (f) => f.source },
    { title: "Attempts", num: true, value: (f) => f.attempts },
    { title: "Error", wrap: true, value: (f) => f.error },
  ];
  if (canOperate()) columns.unshift({ title: "", value: (f) => el("input", { type: "checkbox", "aria-label": "select " + f.id, onclick: (e) => { e.stopPropagation(); e.target.checked ? selected.add(f.id) : selected.delete(f.id); } }) });
  show(
    el("h1", {}, "Failed messages"),
    el("div", { class: "card" }, filterForm),
    el("p", { id: "failed-total" }, page.total + " matching"),
    actions,
    el("p", { id: "bulk-result", class: "muted" }, state.notice),
    table(columns, page.items, (f) => detail(f.id)),
    el("div", { class: "actions" },
      state.before.length ? el("button", { class: "secondary", onclick: () => { state.before.pop(); refresh(); } }, "Newer") : null,
      page.next ? el("button", { class: "secondary", onclick: () => { state.before.push(page.next); refresh(); } }, "Older") : null),
  );
}

async function detail(id) {
  const view = leave();
  const { message, attempts } = await api("GET", "/api/messages/failed/" + id);
  if (view !== state.view) return;
  const payload = el("pre", { id: "payload", hidden: true }, message.payload);
  show(
    el("h1", {}, "Failed message " + message.id),
    el("div", { class: "actions" }, el("button", { class: "secondary", onclick: () => go("failed") }, "Back to the list"),
      canOperate() ? el("button", { id: "retry-one", onclick: () => api("POST", "/api/messages/retry/" + id).then(() => go("failed")).catch(report) }, "Retry") : null,
      canOperate() ? el("button", { id: "delete-one", class: "danger", onclick: () => confirm("Delete failed message " + id + "?") && api("DELETE", "/api/messages/failed/" + id).then(() => go("failed")).catch(report) }, "Delete") : null),
    el("div", { class: "card" }, detailList([
      ["Message id", message.message_id], ["Status", message.status], ["Kind", message.kind],
      ["Plugin", message.plugin ? message.plugin + " " + message.plugin_version + " (sha256 " + short(message.plugin_sha256) + ")" : "(no handler)"],
      ["Source", message.source], ["Failed at", time(message.failed_at)], ["Error", message.error],
      ["Headers", JSON.stringify(message.headers)],
    ])),
    el("div", { class: "card" }, el("button", { id: "show-payload", class: "secondary", onclick: (e) => { payload.hidden = !payload.hidden; e.target.textContent = payload.hidden ? "Show payload" : "Hide payload"; } }, "Show payload"), payload),
    el("h2", {}, "Attempts"),
    table([
      { title: "Attempt", num: true, value: (a) => a.attempt },
      { title: "At", value: (a) => time(a.at) },
      { title: "Version", value: (a) => a.plugin_version ?? "" },
      { title: "sha256", value: (a) => el("span", { title: a.plugin_sha256 ?? "" }, short(a.plugin_sha256)) },
      { title: "Next retry in", value: (a) => a.delay_ms === null ? "" : a.delay_ms + " ms" },
      { title: "Error", wrap: true, value: (a) => a.error },
    ], attempts),
  );
}

function detailList(pairs) {
  return el("dl", {}, pairs.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

async function plugins() {
  const view = state.view;
  const answer = await api("GET", "/api/plugins");
  if (view !== state.view) return;
  const deploy = canOperate() ? el("form", { class: "actions", id: "deploy", onsubmit: async (e) => {
    e.preventDefault();
    const file = e.target.elements.wasm.files[0];
    if (!file) return;
    try {
      const done = await api("POST", "/api/plugins", undefined, await file.arrayBuffer());
      state.notice = (done.new ? "Deployed " : "Already active: ") + done.deployed.plugin + " " + done.deployed.version;
      refresh();
    } catch (error) { report(error); }
  } }, el("label", {}, "Deploy a .wasm component", el("input", { name: "wasm", type: "file", accept: ".wasm" })), el("button", { type: "submit" }, "Deploy")) : null;
  show(
    el("h1", {}, "Plugins"),
    deploy, el("p", { id: "deploy-result", class: "muted" }, state.notice),
    el("h2", {}, "Served, per host"),
    table([
      { title: "Host", value: (p) => p.host },
      { title: "Plugin", value: (p) => p.plugin },
      { title: "Version", value: (p) => p.version },
      { title: "sha256", value: (p) => short(p.sha256) },
      { title: "Source", value: (p) => p.source },
      { title: "Breaker", value: (p) => el("span", { class: p.breaker === "closed" ? "ok" : "bad" }, p.breaker) },
      { title: "Seen", value: (p) => ago(p.reported_at) },
    ], answer.hosts),
    el("h2", {}, "Registry"),
    table([
      { title: "Plugin", value: (d) => d.plugin },
      { title: "Version", value: (d) => d.version },
      { title: "sha256", value: (d) => short(d.sha256) },
      { title: "Deployed", value: (d) => time(d.deployed_at) + " by " + d.deployed_by },
      { title: "", value: (d) => el("span", {},
        el("button", { class: "secondary", onclick: (e) => { e.stopPropagation(); pluginHistory(d.plugin).catch(report); } }, "History"), " ",
        canOperate() ? el("button", { class: "danger", "data-rollback": d.plugin, onclick: (e) => { e.stopPropagation(); rollback(d.plugin); } }, "Roll back") : null) },
    ], answer.registry),
    el("div", { id: "history" }),
  );
}

async function rollback(plugin) {
  if (!confirm("Roll back " + plugin + " to its previous deployment on every host?")) return;
  try {
    const done = await api("POST", "/api/plugins/" + encodeURIComponent(plugin) + "/rollback");
    state.notice = "Rolled back " + plugin + ": " + done.rolled_back.version + " -> " + done.active.version;
    refresh();
  } catch (error) { report(error); }
}

async function pluginHistory(plugin) {
  const view = leave();
  const answer = await api("GET", "/api/plugins/" + encodeURIComponent(plugin) + "/history");
  if (view !== state.view) return;
  document.getElementById("history").replaceChildren(el("h2", {}, "History of " + plugin), table([
    { title: "Deployment", num: true, value: (d) => d.id },
    { title: "Version", value: (d) => d.version },
    { title: "sha256", value: (d) => short(d.sha256) },
    { title: "Deployed", value: (d) => time(d.deployed_at) + " by " + d.deployed_by },
    { title: "Rolled back", value: (d) => d.rolled_back_at ? time(d.rolled_back_at) : "" },
  ], answer.deployments));
}

// Held keys: an ordered plugin's dead letter holds its key (GET /api/keys/held); an
// operator skips it (POST /api/keys/held/skip) or retries the failed message.
async function keys() {
  const view = state.view;
  const answer = await api("GET", "/api/keys/held?limit=500");
  if (view !== state.view) return;
  show(
    el("h1", {}, "Held keys"),
    el("p", { class: "hint" }, "A dead letter of an ordered plugin holds its key: the key's later messages wait behind it. Retry the failed message (the key goes on once it is handled) or skip it (the key goes on without it)."),
    el("p", { id: "keys-result", class: "muted" }, state.notice),
    answer.items.length === 0 ? el("p", { id: "no-held-keys", class: "muted" }, "No key is held.") : table([
      { title: "Queue", value: (k) => k.queue },
      { title: "Key", wrap: true, value: (k) => k.key },
      { title: "Plugin", value: (k) => k.plugin },
      { title: "Held by message", value: (k) => k.message_id },
      { title: "Seq", num: true, value: (k) => k.seq },
      { title: "Held since", value: (k) => time(k.held_at) },
      { title: "Waiting", num: true, value: (k) => k.waiting },
      { title: "", value: (k) => canOperate() ? el("button", { class: "danger", "data-skip": k.key, onclick: () => skipKey(k) }, "Skip") : null },
    ], answer.items),
  );
}

async function skipKey(k) {
  if (!confirm("Skip the message holding key " + k.key + " of queue " + k.queue + " for " + k.plugin + "? The " + k.waiting + " waiting behind it run without it.")) return;
  try {
    await api("POST", "/api/keys/held/skip", { queue: k.queue, key: k.key, plugin: k.plugin });
    state.notice = "Skipped key " + k.key + " of queue " + k.queue + " for " + k.plugin + ".";
    refresh();
  } catch (error) { report(error); }
}

// --- navigation, refresh, sign-in ----------------------------------------------------

const PAGES = { overview, flow, failed, keys, plugins };

function report(error) {
  const page = document.getElementById("page");
  page.prepend(problem(error));
}

function stopRefresh() {
  clearTimeout(state.timer);
  state.timer = null;
}

// Stop refreshing and drop what is loading: the page shows something else now.
function leave() {
  stopRefresh();
  return ++state.view;
}

// Load the page now (`auto`: the timer's reload, which the failed list skips while the
// operator works on it or nothing changed), then again every few seconds.
async function refresh(auto) {
  stopRefresh();
  const page = state.page;
  const view = state.view;
  try {
    await PAGES[page](auto === true);
  } catch (error) {
    if (state.token && view === state.view) show(problem(error));
  }
  if (state.token && page === state.page && view === state.view) state.timer = setTimeout(() => refresh(true), REFRESH_MS);
}

// The page follows the URL's hash: a bookmark or a link opens its page, Back and Forward
// move between pages; a click on the menu sets the hash.
function go(page) {
  leave();
  state.page = PAGES[page] ? page : "overview";
  state.notice = "";
  if (location.hash !== "#" + state.page) history.replaceState(null, "", "#" + state.page);
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === state.page);
  refresh();
}

function signOut(why) {
  leave();
  state.token = null;
  sessionStorage.removeItem("wharf-token");
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("page").replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = why || "";
}

async function signIn(token) {
  state.token = token;
  try {
    const me = await api("GET", "/api/whoami");
    state.scope = me.scope;
    sessionStorage.setItem("wharf-token", token);
    document.getElementById("login").hidden = true;
    document.getElementById("nav").hidden = false;
    document.getElementById("signout").hidden = false;
    document.getElementById("who").textContent = me.name + " (" + me.scope + ")";
    go(location.hash.slice(1));
  } catch (error) {
    signOut(error.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn(document.getElementById("token").value.trim());
  });
  document.getElementById("signout").addEventListener("click", () => signOut());
  for (const link of document.querySelectorAll("#nav a")) {
    link.addEventListener("click", (e) => {
      e.preventDefault();
      if (location.hash === "#" + link.dataset.page) go(link.dataset.page);
      else location.hash = link.dataset.page;
    });
  }
  window.addEventListener("hashchange", () => { if (state.token) go(location.hash.slice(1)); });
  if (state.token) signIn(state.token); else signOut();
});
