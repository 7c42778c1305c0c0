// berth dashboard: polls the API with the token from sessionStorage and follows the event
// stream over fetch() (EventSource cannot send an Authorization header).
"use strict";

const TOKEN_KEY = "berth-token";
const OVERVIEW_EVERY_MS = 2000;
const SERIES_EVERY_MS = 5000;
const TAIL_MAX = 200;

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem(TOKEN_KEY), timers: [], tail: null };

// -- API -------------------------------------------------------------------------------------

class AuthError extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) },
  });
  if (response.status === 401) throw new AuthError("the token was refused");
  const body = await response.json();
  if (!response.ok) throw new Error(body.description || response.statusText);
  return body;
}

// -- formatting ------------------------------------------------------------------------------

const fmt = {
  num: (v, digits = 0) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits)),
  pct: (v) => (v === null || v === undefined ? "-" : `${(v * 100).toFixed(1)}%`),
  time: (ms) => (ms ? new Date(ms).toLocaleTimeString() : "-"),
  date: (s) => (s ? new Date(s * 1000).toLocaleString() : "-"),
};

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows, columns, empty, decorate) {
  const tbody = $(id).querySelector("tbody");
  tbody.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = columns;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const row of rows) {
    const tr = document.createElement("tr");
    decorate(tr, row);
    tbody.append(tr);
  }
}

// -- overview: figures and tables ------------------------------------------------------------

async function refreshOverview() {
  const view = await api(`/api/v1/orchestrator/overview?window=${$("window").value}`);
  $("total-rate").textContent = fmt.num(view.totals.rate, 2);
  $("total-requests").textContent = fmt.num(view.totals.requests);
  $("total-errors").textContent = view.totals.requests
    ? fmt.pct(view.totals.errors / view.totals.requests) : "-";
  $("active-alerts").textContent = view.alerts === null ? "-" : view.alerts.length;

  fillTable("routes", view.routers, 6, "no requests in this window", (tr, r) => {
    tr.dataset.host = r.name;
    tr.append(cell(r.name), cell(fmt.num(r.rate, 2), "num"), cell(fmt.num(r.requests), "num"),
      cell(fmt.pct(r.error_rate), `num ${r.error_rate > 0.05 ? "bad" : ""}`),
      cell(fmt.num(r.latency_ms.p50, 1), "num"), cell(fmt.num(r.latency_ms.p99, 1), "num"));
  });
  fillTable("certificates", view.certificates, 4, "no certificates", (tr, c) => {
    const days = c.days_left;
    const level = days === null ? "" : days < 7 ? "bad" : days < 14 ? "warn" : "ok";
    tr.append(cell(c.name), cell(c.status), cell(fmt.num(days, 1), `num ${level}`),
      cell(fmt.date(c.renew_after)));
  });
  fillTable("services", view.services, 3, "no services", (tr, s) => {
    const total = s.containers.length;
    const level = total && s.healthy === total ? "ok" : total ? "bad" : "";
    tr.append(cell(s.name), cell(s.status),
      cell(total ? `${s.healthy}/${total} healthy` : "no checks yet", level));
  });
  renderAlerts(view.alerts);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function renderAlerts(alerts) {
  if (alerts === null) {
    fillTable("alerts", [], 6, "alerts need an admin token", () => {});
    return;
  }
  fillTable("alerts", alerts, 6, "no active alerts", (tr, a) => {
    tr.dataset.alert = a.id;
    const action = document.createElement("td");
    if (a.acknowledged_at) {
      action.textContent = "acknowledged";
      action.className = "muted";
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "plain";
      button.textContent = "Acknowledge";
      button.addEventListener("click", () => acknowledge(a.id));
      action.append(button);
    }
    tr.append(cell(a.severity, `sev-${a.severity}`), cell(a.rule), cell(a.subject),
      cell(a.message), cell(fmt.time(a.fired_at)), action);
  });
}

async function acknowledge(id) {
  await run(() => api(`/api/v1/orchestrator/alerts/${encodeURIComponent(id)}/ack`,
    { method: "POST" }));
  await run(refreshOverview);
}

// -- charts ----------------------------------------------------------------------------------

function canvasContext(id) {
  const canvas = $(id);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, width, height };
}

function axis(ctx, width, height, max, unit) {
  ctx.fillStyle = "#6b7385";
  ctx.fillText(`${fmt.num(max, max < 10 ? 1 : 0)} ${unit}`, 4, 12);
  ctx.strokeStyle = "#e2e5eb";
  ctx.beginPath();
  ctx.moveTo(0, height - 14.5);
  ctx.lineTo(width, height - 14.5);
  ctx.stroke();
}

function drawRate(points) {
  const { ctx, width, height } = canvasContext("chart-rate");
  const max = Math.max(1, ...points.map((p) => p.requests));
  const plot = height - 30;
  const step = width / Math.max(points.length, 1);
  points.forEach((p, i) => {
    const h = (p.requests / max) * plot;
    const e = (p.errors / max) * plot;
    ctx.fillStyle = "#2f6fde";
    ctx.fillRect(i * step + 1, height - 15 - h, step - 2, h);
    ctx.fillStyle = "#d0352f";
    ctx.fillRect(i * step + 1, height - 15 - e, step - 2, e);
  });
  axis(ctx, width, height, max, "req/min");
  if (points.length) {
    ctx.fillText(fmt.time(points[0].ts * 1000), 4, height - 2);
  }
}

function drawLatency(points) {
  const { ctx, width, height } = canvasContext("chart-latency");
  const values = points.flatMap((p) => [p.p50_ms, p.p99_ms]).filter((v) => v !== null);
  const max = Math.max(1, ...values);
  const plot = height - 30;
  const step = width / Math.max(points.length - 1, 1);
  const lines = [["p50_ms", "#1f9d55"], ["p99_ms", "#c77c02"]];
  for (const [key, color] of lines) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    points.forEach((p, i) => {
      if (p[key] === null) {
        drawing = false;
        return;
      }
      const x = i * step;
      const y = height - 15 - (p[key] / max) * plot;
      if (drawing) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      ctx.fillRect(x - 2, y - 2, 4, 4);  // a lone minute still shows
      drawing = true;
    });
    ctx.stroke();
  }
  axis(ctx, width, height, max, "ms");
  lines.forEach(([key, color], i) => {
    ctx.fillStyle = color;
    ctx.fillText(key.replace("_ms", ""), width - 60 + i * 30, 12);
  });
}

async function refreshSeries() {
  const series = await api("/api/v1/orchestrator/metrics/series?minutes=30");
  drawRate(series.points);
  drawLatency(series.points);
}

// -- live event tail -------------------------------------------------------------------------

function addTailEvent(item) {
  const li = document.createElement("li");
  li.dataset.trace = item.trace_id;
  li.dataset.type = item.type;
  const type = document.createElement("span");
  type.className = "type";
  type.textContent = item.type;
  const trace = document.createElement("a");
  trace.textContent = item.trace_id ? item.trace_id.slice(0, 12) : "";
  trace.title = "show this trace only";
  trace.addEventListener("click", () => {
    $("trace").value = item.trace_id;
    startTail();
  });
  const detail = item.data && item.data.status !== undefined
    ? ` ${item.data.method || ""} ${item.data.path || ""} ${item.data.status}` : "";
  li.append(`${fmt.time(item.ts_ms)} ${item.stream} `, type, ` ${item.subject}${detail} `, trace);
  const list = $("tail");
  list.prepend(li);
  while (list.children.length > TAIL_MAX) list.lastChild.remove();
}

function parseSse(block) {
  const event = { data: "" };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const [field, ...rest] = line.split(":");
    const value = rest.join(":").replace(/^ /, "");
    if (field === "data") event.data += value;
    else if (field === "id") event.id = value;
  }
  return event.data ? event : null;
}

// Follows the stream after `lastId` (null: from now on), reconnecting after errors.
async function followTail(controller, trace, lastId) {
  const params = new URLSearchParams();
  if (trace) params.set("trace_id", trace);
  while (!controller.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${state.token}` };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(`/api/v1/events/stream?${params}`,
        { headers, signal: controller.signal });
      if (!response.ok) throw new Error(`event stream: ${response.status}`);
      setLive(true);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const parsed = parseSse(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (parsed) {
            lastId = parsed.id || lastId;
            addTailEvent(JSON.parse(parsed.data));
          }
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      $("tail-state").textContent = error.message;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));  // then reconnect
  }
}

// The latest events (of one trace, when filtered) first, then the live ones.
function startTail() {
  if (state.tail) state.tail.abort();
  const controller = new AbortController();
  state.tail = controller;
  const trace = $("trace").value.trim().toLowerCase();
  $("tail").replaceChildren();
  $("tail-state").textContent = trace ? `trace ${trace}` : "all events";
  const params = new URLSearchParams({ limit: "50" });
  if (trace) params.set("trace_id", trace);
  run(async () => {
    const recent = await api(`/api/v1/events?${params}`);
    if (controller.signal.aborted) return;
    recent.items.slice().reverse().forEach(addTailEvent);
    followTail(controller, trace, recent.items.length ? recent.items[0].id : null);
  });
}

function setLive(on) {
  $("live").textContent = on ? "live" : "reconnecting";
  $("live").className = `live ${on ? "on" : "off"}`;
}

// -- session ---------------------------------------------------------------------------------

async function run(task) {
  try {
    await task();
  } catch (error) {
    if (error instanceof AuthError) signOut(error.message);
    else $("updated").textContent = `update failed: ${error.message}`;
  }
}

function every(ms, task) {
  run(task);
  state.timers.push(setInterval(() => run(task), ms));
}

function signIn() {
  $("login").hidden = true;
  $("app").hidden = false;
  every(OVERVIEW_EVERY_MS, refreshOverview);
  every(SERIES_EVERY_MS, refreshSeries);
  startTail();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.timers.forEach(clearInterval);
  state.timers = [];
  if (state.tail) state.tail.abort();
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    try {
      await api("/api/v1/orchestrator/overview?window=1m");
    } catch (error) {
      $("login-error").textContent = error.message;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("token").value = "";
    signIn();
  });
  $("logout").addEventListener("click", () => signOut());
  $("window").addEventListener("change", () => run(refreshOverview));
  $("tail-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startTail();
  });
  $("trace-clear").addEventListener("click", () => {
    $("trace").value = "";
    startTail();
  });
  if (state.token) signIn();
  else signOut();
});
