// kaizen dashboard: polls /api/state with the bearer token and draws plain SVG/DOM (no libraries, no network).
"use strict";

const POLL_MS = 1500;
const SVG = "http://www.w3.org/2000/svg";
let token = new URLSearchParams(location.search).get("token") || sessionStorage.getItem("kaizen-token") || "";
let timer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(n, digits = 1) {
  if (n === null || n === undefined) return "–";
  if (typeof n !== "number") return String(n);
  return Math.abs(n) >= 1000 ? n.toLocaleString(undefined, { maximumFractionDigits: 0 }) : n.toFixed(digits).replace(/\.0+$/, "");
}

// Timestamps: the state topics hold epoch seconds (patterns, series) or ISO strings (events); a number
// above 1e11 is milliseconds. Shown as local "YYYY-MM-DD HH:MM:SS" inside <time datetime="ISO">.
function toDate(t) {
  if (t === null || t === undefined || t === "") return null;
  const d = typeof t === "number" ? new Date(t > 1e11 ? t : t * 1000) : new Date(t);
  return isNaN(d.getTime()) ? null : d;
}

function fmtDateTime(d) {
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function timeEl(t) {
  const d = toDate(t);
  return d ? el("time", { datetime: d.toISOString() }, fmtDateTime(d)) : el("span", {}, "–");
}

function fmtDuration(ms) {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s` : (s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);
}

// Axis labels with as many decimals as the range needs (0.16..0.24 reads "0.16 / 0.24", not "0.2 / 0.2").
function fmtAxis(v, lo, hi) {
  const span = Math.abs(hi - lo) || Math.abs(hi) || 1;
  const digits = Math.max(0, Math.min(6, Math.ceil(-Math.log10(span)) + 1));
  return Math.abs(v) >= 1e4 ? v.toLocaleString(undefined, { maximumFractionDigits: 0 }) : v.toFixed(digits);
}

let measureCtx = null;
function textWidth(text, px) {
  measureCtx = measureCtx || document.createElement("canvas").getContext("2d");
  measureCtx.font = `${px}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
  return measureCtx.measureText(text).width;
}

function showLogin(message) {
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  if (timer) { clearTimeout(timer); timer = null; }
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = document.getElementById("token-input").value.trim();
  sessionStorage.setItem("kaizen-token", token);
  poll();
});

async function poll() {
  if (!token) { showLogin("enter a token (or open the page with ?token=…)"); return; }
  try {
    const res = await fetch("/api/state", { headers: { Authorization: "Bearer " + token } });
    if (res.status === 401) { showLogin("token refused (401)"); return; }
    if (!res.ok) throw new Error("HTTP " + res.status);
    const state = await res.json();
    document.getElementById("login").hidden = true;
    document.getElementById("main").hidden = false;
    render(state);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    const h = document.getElementById("health");
    h.textContent = "unreachable: " + err.message; h.className = "pill bad";
  }
  timer = setTimeout(poll, POLL_MS);
}

function render(state) {
  const st = state.status;
  const h = document.getElementById("health");
  h.textContent = st.healthy ? "healthy" : (st.broker.reachable ? "degraded" : "broker unreachable");
  h.className = "pill " + (st.healthy ? "ok" : "bad");
  const p = state.principal;
  document.getElementById("who").textContent =
    `${p.principal} · ${p.roles.join(", ")} · tenants: ${p.tenants === "*" ? "all" : p.tenants.join(", ")}`;
  renderMetrics(st);
  renderSeries(state.series, state.series_total);
  renderOpportunities(state.opportunities);
  renderTimeline(state.improvements);
  renderPatterns(state.patterns, state.pattern_window_seconds || 3600);
}

function renderMetrics(st) {
  const m = st.metrics;
  const items = [
    ["evolution level", st.evolution_level], ["cycles started", m.improvement_cycles_started],
    ["cycles completed", m.improvement_cycles_completed], ["deployed", m.improvements_deployed],
    ["rolled back", m.improvements_rolled_back], ["code gen requests", m.code_generation_requests],
    ["code gen success", m.code_generation_success_rate === null ? "–" : fmt(100 * m.code_generation_success_rate) + " %"],
    ["telemetry events", m.telemetry_events_processed], ["insights", m.insights_generated],
    ["CloudWatch calls", m.cloudwatch_api_calls], ["breaker opens", m.circuit_breaker_opens],
    ["workers", st.workers.filter((w) => w.role === "worker").length], ["connectors", st.connectors.length],
  ];
  const box = document.getElementById("metrics");
  box.replaceChildren(...items.map(([k, v]) => el("div", { class: "metric" }, el("b", {}, fmt(v, 0)), el("span", {}, k))));
}

function renderSeries(series, total) {
  const box = document.getElementById("series");
  if (!series.length) { box.replaceChildren(el("p", { class: "empty" }, "no scored series yet")); return; }
  box.replaceChildren(...series.map(plotSeries));
  if (total > series.length) {
    box.append(el("p", { class: "empty" }, `${total - series.length} more series not charted ` +
      "(charted: those anomalous now, spiking away from their own history, or new — then by peak score)"));
  }
}

function plotSeries(s) {
  const pts = (s.points || []).filter((p) => Array.isArray(p) && p.length >= 2);
  const W = 380, H = 140, L = 46, R = 30, T = 10, B = 18;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "series-plot" });
  if (pts.length) {
    const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || t0 + 1;
    const vals = pts.map((p) => p[1]);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (hi === lo) { const pad = Math.abs(hi) * 0.05 || 1; hi += pad; lo -= pad; }
    const x = (t) => L + ((t - t0) / Math.max(1e-9, t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    const ys = (sc) => T + (1 - Math.max(0, Math.min(1, sc))) * (H - T - B);
    root.append(svg("line", { x1: L, x2: W - R, y1: ys(0.7), y2: ys(0.7), stroke: "#ff4d4f", "stroke-dasharray": "3 3", "stroke-width": 0.7 }));
    const scored = pts.filter((p) => p[2] !== null && p[2] !== undefined);
    if (scored.length) {
      const area = `M${x(scored[0][0])},${ys(0)} ` + scored.map((p) => `L${x(p[0])},${ys(p[2])}`).join(" ") + ` L${x(scored[scored.length - 1][0])},${ys(0)} Z`;
      root.append(svg("path", { d: area, fill: "rgba(255,176,32,0.18)", stroke: "#ffb020", "stroke-width": 1, class: "score-overlay" }));
    }
    root.append(svg("path", { d: pts.map((p, i) => `${i ? "L" : "M"}${x(p[0])},${y(p[1])}`).join(" "), fill: "none", stroke: "#4aa3ff", "stroke-width": 1.5 }));
    for (const p of scored) {
      if (p[2] >= 0.7) root.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 3.5, fill: "#ff4d4f", class: "anomaly" }, undefined));
    }
    const mid = (hi + lo) / 2;
    for (const [v, yy] of [[hi, T + 8], [mid, (T + H - B) / 2 + 3], [lo, H - B]]) {
      root.append(svg("text", { x: L - 4, y: yy, fill: "#8a97a6", "font-size": 9, "text-anchor": "end", class: "axis-value" }, fmtAxis(v, lo, hi)));
    }
    root.append(svg("text", { x: W - R + 3, y: T + 8, fill: "#ffb020", "font-size": 9 }, "1.0"));
    root.append(svg("text", { x: W - R + 3, y: H - B, fill: "#ffb020", "font-size": 9 }, "0"));
    root.append(svg("text", { x: W - 2, y: (T + H - B) / 2 + 3, fill: "#ffb020", "font-size": 8, "text-anchor": "end" }, "score"));
    const d0 = toDate(t0), d1 = toDate(t1);
    if (d0 && d1) {
      root.append(svg("text", { x: L, y: H - 4, fill: "#8a97a6", "font-size": 9 }, d0.toLocaleTimeString()));
      root.append(svg("text", { x: W - R, y: H - 4, fill: "#8a97a6", "font-size": 9, "text-anchor": "end" }, d1.toLocaleTimeString()));
    }
  }
  const last = pts.length ? pts[pts.length - 1] : null;
  const title = `${s.metric_name || "?"} · ${s.component || ""} · ${s.tenant_id || ""}` + (last ? ` · last ${fmt(last[1], 2)} (score ${fmt(last[2], 2)})` : "");
  const head = el("div", { class: "title", title: s.series || "" }, title);
  if (s.chart_reason) head.prepend(el("span", { class: "reason " + s.chart_reason.replace(/\W+/g, "-") }, s.chart_reason), " ");
  return el("div", { class: "plot", "data-series": s.series || "", "data-reason": s.chart_reason || "" }, head, root);
}

function renderOpportunities(opps) {
  const body = document.querySelector("#opportunities tbody");
  if (!opps.length) { body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "no opportunities"))); return; }
  body.replaceChildren(...opps.map((o, i) => el("tr", { class: "opportunity", "data-id": o.opportunity_id },
    el("td", { class: "num" }, i + 1), el("td", {}, el("span", { class: "prio " + o.priority }, o.priority)),
    el("td", {}, o.title), el("td", {}, o.tenant_id), el("td", { class: "num" }, fmt(o.impact_score)),
    el("td", {}, o.severity), el("td", {}, o.risk_level), el("td", {}, o.status))));
}

function markerFor(ev) {
  // kaizen's cycle reports the rollout stage on "monitoring" events as data.deployment.stage
  const dep = (ev.data && ev.data.deployment) || {};
  const stage = (ev.data && (ev.data.stage || ev.data.rollout)) || dep.stage || "";
  // a "deploying" step without a stage is the step itself, not a rollout (the stage comes with monitoring)
  const isDeploy = (ev.status === "deploying" && stage) || (ev.status === "monitoring" && dep.stage);
  if (ev.status === "rolled_back") {
    return { sym: "✕", color: "#ff4d4f", cls: "rollback-mark", label: "rollback" + (ev.data && ev.data.verdict ? " (" + ev.data.verdict + ")" : "") };
  }
  if (isDeploy && String(stage).includes("canary")) return { sym: "◆", color: "#ffb020", cls: "canary-mark", label: "canary" };
  if (isDeploy) return { sym: "●", color: "#4aa3ff", cls: "full-mark", label: "full rollout" };
  if (ev.data && ev.data.verdict) return { sym: "★", color: "#c58bff", cls: "verdict-mark", label: "verdict " + ev.data.verdict };
  if (ev.status === "completed") return { sym: "★", color: "#3ecf8e", cls: "verdict-mark", label: "kept" };
  return { sym: "•", color: "#8a97a6", cls: "step-mark", label: ev.status };
}

// Each improvement: one line of markers over time; a label under each change of state, placed in the first
// lane where it does not overlap the previous label (repeated states such as monitoring checks share one label).
function renderTimeline(imps) {
  const box = document.getElementById("timeline");
  if (!imps.length) { box.replaceChildren(el("p", { class: "empty" }, "no improvements yet")); return; }
  const W = Math.max(320, Math.floor(box.clientWidth - 320 - 12));
  box.replaceChildren(...imps.map((imp) => {
    let evs = imp.timeline || [];
    if (!evs.length) evs = [{ status: imp.status, timestamp: new Date().toISOString(), data: {}, reason: "" }];
    const L = 12, R = 12, PX = 10, LANE = 13, BASE = 40;
    const ts = evs.map((e) => Date.parse(e.timestamp));
    const t0 = Math.min(...ts), t1 = Math.max(...ts);
    const xOf = (t) => evs.length === 1 ? L + 6 : L + 6 + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R - 12);
    const marks = svg("g", {}), labels = svg("g", {});
    const laneEnds = [];
    let prevLabel = null;
    evs.forEach((ev, i) => {
      const x = xOf(ts[i]);
      const m = markerFor(ev);
      const g = svg("g", { class: "tl-mark " + m.cls });
      g.append(svg("title", {}, `${ev.status} ${ev.timestamp} ${ev.reason || ""}`));
      g.append(svg("text", { x, y: 25, fill: m.color, "font-size": m.cls === "step-mark" ? 16 : 15, "text-anchor": "middle", "font-weight": "bold" }, m.sym));
      marks.append(g);
      const text = m.cls === "step-mark" ? String(ev.status).replaceAll("_", " ") : m.label;
      if (text === prevLabel) return;
      prevLabel = text;
      const w = textWidth(text, PX);
      const left = Math.min(Math.max(0, x - w / 2), W - w);
      let lane = laneEnds.findIndex((end) => end + 6 <= left);
      if (lane < 0) { lane = laneEnds.length; laneEnds.push(0); }
      laneEnds[lane] = left + w;
      labels.append(svg("text", { x: left, y: BASE + lane * LANE, fill: "#9aa7b6", "font-size": PX, class: "tl-label" }, text));
    });
    const H = BASE + Math.max(1, laneEnds.length) * LANE - 6;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H });
    root.append(svg("line", { x1: L, x2: W - R, y1: 20, y2: 20, stroke: "#2a3440", "stroke-width": 2 }), marks, labels);
    const verdict = imp.verdict ? ` · verdict ${imp.verdict}` : "";
    const degr = imp.degradation !== null && imp.degradation !== undefined ? ` · degradation ${fmt(100 * imp.degradation)} %` : "";
    const when = el("small", {}, "started ", timeEl(evs[0].timestamp), evs.length > 1 ? ` · over ${fmtDuration(t1 - t0)}` : "");
    return el("div", { class: "tl-row" + (imp.rollback_triggered || imp.status === "rolled_back" ? " rolled-back" : ""), "data-id": imp.improvement_id },
      el("div", { class: "name" }, el("span", { class: "status " + imp.status }, imp.status), " ", imp.title || imp.improvement_id,
        el("small", {}, `${imp.improvement_id} · ${imp.tenant_id}${verdict}${degr}`), when), root);
  }));
}

function renderPatterns(patterns, windowSeconds) {
  const win = windowSeconds >= 3600 && windowSeconds % 3600 === 0 ? `${windowSeconds / 3600} h` : `${Math.round(windowSeconds / 60)} min`;
  document.getElementById("pattern-count-head").textContent = `Count (current ${win} window)`;
  const body = document.querySelector("#patterns tbody");
  if (!patterns.length) { body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "no error patterns"))); return; }
  body.replaceChildren(...patterns.map((p) => el("tr", { class: "pattern" },
    el("td", { class: "num" }, fmt(p.count_current, 0)), el("td", { class: "num" }, fmt(p.total ?? p.count_window, 0)),
    el("td", { title: p.sample || "" }, el("code", {}, p.template)),
    el("td", {}, p.category || ""), el("td", {}, p.log_group || ""), el("td", {}, p.tenant_id || ""),
    el("td", { class: "when" }, timeEl(p.last_seen)))));
}

poll();
