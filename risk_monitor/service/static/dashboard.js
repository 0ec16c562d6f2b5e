// Risk Monitor dashboard. Vanilla JS, no dependencies (the page must work air-gapped).
// Every value from the server goes into the page through textContent or a whitelisted class
// name, never as HTML: limit ids and scopes come from configuration and are not trusted.
"use strict";

(function () {
  const STATE_URL = "v1/dashboard/state";
  const TIMELINE_URL = "v1/dashboard/timeline?hours=24";
  const CONTROLS_URL = "v1/alerts/controls"; // active silences, acknowledgements that hold
  const TIMELINE_EVERY_MS = 30000;
  const FETCH_TIMEOUT_MS = 10000;
  const SVG = "http://www.w3.org/2000/svg";
  const STATUSES = ["COMPLIANT", "WARNING", "BREACH", "UNKNOWN"];
  const LIMIT_STATUSES = ["OK", "WARN", "BREACH", "UNKNOWN"];
  const DELIVERIES = ["pending", "sending", "sent", "failed", "suppressed"];
  const STATUS_ORDER = { BREACH: 0, UNKNOWN: 1, WARN: 2, OK: 3 };

  // ?refresh=<seconds> overrides the server's interval (wall screens, tests): 1 to 300 s
  const override = Number(new URLSearchParams(window.location.search).get("refresh"));
  const refreshOverrideMs = override >= 1 && override <= 300 ? override * 1000 : null;
  let refreshMs = refreshOverrideMs || 3000;
  let last = null; // last good state answer
  let lastOkAt = null; // Date of the last good answer (client clock)
  let failure = null; // why the last poll failed, or null
  let sort = { key: null, dir: "desc" }; // null key: the server's worst-first order
  let lastTimelineAt = 0;
  const drawn = {}; // section -> signature of the data it shows (skip identical re-renders)

  // -- small helpers --------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function pick(value, allowed, fallback) {
    return allowed.includes(value) ? value : fallback;
  }

  function slug(value, allowed, fallback) {
    return pick(value, allowed, fallback).toLowerCase();
  }

  function isNum(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const twoFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function usd(v) {
    if (!isNum(v)) return "unknown";
    const sign = v < 0 ? "-" : "";
    const a = Math.abs(v);
    return sign + "$" + (a >= 100 ? intFmt.format(a) : twoFmt.format(a));
  }

  function usdShort(v) {
    if (!isNum(v)) return "unknown";
    const sign = v < 0 ? "-" : "";
    const a = Math.abs(v);
    if (a >= 1e9) return sign + "$" + (a / 1e9).toFixed(2) + "B";
    if (a >= 1e6) return sign + "$" + (a / 1e6).toFixed(2) + "M";
    if (a >= 1e3) return sign + "$" + (a / 1e3).toFixed(1) + "k";
    return sign + "$" + a.toFixed(0);
  }

  function withUnit(v, unit) {
    if (!isNum(v)) return "—";
    switch (unit) {
      case "USD": return usd(v);
      case "%": return v.toFixed(1) + " %";
      case "x": return v.toFixed(2) + "x";
      case "s": return intFmt.format(v) + " s";
      default: return twoFmt.format(v);
    }
  }

  function pct(v) {
    return isNum(v) ? (v * 100).toFixed(1) + " %" : "unknown";
  }

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "—";
    return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
  }

  function age(s) {
    if (!isNum(s)) return "—";
    if (s < 120) return s.toFixed(0) + " s";
    if (s < 7200) return (s / 60).toFixed(0) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function seconds(s) {
    if (!isNum(s)) return "—";
    return s < 10 ? s.toFixed(2) + " s" : age(s);
  }

  function badge(text, kind) {
    return el("span", "badge badge-" + kind, text);
  }

  // Redraw a section only when its data changed: the page stays still between evaluations
  // (no flicker, selections and hover titles survive a poll).
  function changed(section, data) {
    const sig = JSON.stringify(data);
    if (drawn[section] === sig) return false;
    drawn[section] = sig;
    return true;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  async function getJson(url) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
    try {
      const res = await fetch(url, { cache: "no-store", signal: ctrl.signal,
                                     headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("HTTP " + res.status);
      return await res.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // -- header and banner ----------------------------------------------------------------------
  function renderHeader(state) {
    const h = state.header;
    const lost = failure !== null;
    // fail closed: a page that cannot refresh never keeps showing a reassuring colour
    const shown = lost && h.display_status !== "BREACH" ? "UNKNOWN" : pick(h.display_status, STATUSES, "UNKNOWN");
    const badgeEl = $("overall-status");
    badgeEl.textContent = shown;
    badgeEl.className = "status status-" + shown.toLowerCase();
    badgeEl.dataset.status = shown;
    const note = [];
    if (shown !== h.status) note.push("last evaluation said " + pick(h.status, STATUSES, "UNKNOWN"));
    if (state.stale.stale || lost) note.push("data stale");
    $("status-note").textContent = note.join(" — ");
    $("as-of").textContent = when(h.as_of);
    $("data-age").textContent = age(h.data_age_s);
    const cfg = $("config-version");
    cfg.textContent = h.limit_config_version || "—";
    const inForce = h.limits_version_in_force;
    $("config-in-force").textContent = inForce && h.limit_config_version && inForce !== h.limit_config_version
      ? "limits in force now: " + inForce : "";
    cfg.title = "configuration document " + (h.config_document_version || "—") + " from " + (h.config_source || "—");
    const src = $("evaluation-source");
    const noEval = h.evaluation_source === "no-evaluation-yet" || h.evaluation_source === "unavailable";
    src.textContent = h.evaluation_source === "no-evaluation-yet" ? "NO EVALUATION YET"
      : h.evaluation_source === "unavailable" ? "STORE UNAVAILABLE" : h.evaluation_source;
    src.className = noEval ? "no-eval" : "";
  }

  function renderBanner() {
    const reasons = [];
    if (failure !== null) {
      const since = lastOkAt ? " — figures below are from " + lastOkAt.toISOString().slice(11, 19) + "Z" : "";
      reasons.push("cannot reach the Risk Monitor service (" + failure + ")" + since);
    }
    if (last) reasons.push(...last.stale.reasons);
    const banner = $("stale-banner");
    const list = $("stale-reasons");
    clear(list);
    for (const r of reasons) list.appendChild(el("li", null, r));
    banner.hidden = reasons.length === 0;
    banner.dataset.connection = failure !== null ? "lost" : "ok";
    document.body.dataset.connection = failure !== null ? "lost" : "ok";
    document.body.dataset.stale = reasons.length ? "true" : "false";
  }

  // -- portfolio ------------------------------------------------------------------------------
  function setFigure(id, value, text) {
    const node = $(id);
    node.textContent = text;
    node.classList.toggle("neg", isNum(value) && value < 0);
  }

  function renderPortfolio(state) {
    const x = state.exposures;
    setFigure("equity", x.equity_usd, usd(x.equity_usd));
    setFigure("gross", x.gross_usd, usd(x.gross_usd));
    setFigure("net", x.net_usd, usd(x.net_usd));
    setFigure("daily-pnl", x.daily_pnl_usd, usd(x.daily_pnl_usd));
    setFigure("unrealized-pnl", x.unrealized_pnl_usd, usd(x.unrealized_pnl_usd));
    setFigure("drawdown", null, isNum(x.drawdown_pct) ? x.drawdown_pct.toFixed(2) + " %" : "unknown");
    const counts = $("counts");
    if (!changed("counts", state.header.counts)) return;
    clear(counts);
    for (const s of LIMIT_STATUSES) {
      const n = state.header.counts ? state.header.counts[s] || 0 : 0;
      const chip = badge(s + " " + n, s.toLowerCase());
      chip.dataset.status = s;
      counts.appendChild(chip);
    }
  }

  // -- limits ---------------------------------------------------------------------------------
  function sortedLimits(rows) {
    if (!sort.key) return rows.slice();
    const dir = sort.dir === "asc" ? 1 : -1;
    const val = (r) => {
      if (sort.key === "utilisation") return isNum(r.utilisation) ? r.utilisation : null;
      if (sort.key === "status") return STATUS_ORDER[r.status] !== undefined ? -STATUS_ORDER[r.status] : null;
      return r[sort.key];
    };
    return rows.slice().sort((a, b) => {
      const va = val(a);
      const vb = val(b);
      if (va === null && vb === null) return 0;
      if (va === null) return 1; // unknown values last, whatever the direction
      if (vb === null) return -1;
      if (va < vb) return -dir;
      if (va > vb) return dir;
      return 0;
    });
  }

  function utilCell(r) {
    const td = el("td", "c-util");
    if (!isNum(r.utilisation)) {
      td.appendChild(el("span", "util-unknown", "unknown"));
      return td;
    }
    const wrap = el("div", "util");
    const track = el("div", "track");
    const fill = el("div", "fill fill-" + slug(r.status, ["OK", "WARN", "BREACH"], "OK"));
    fill.style.width = Math.max(0, Math.min(100, r.utilisation * 100)).toFixed(1) + "%";
    track.appendChild(fill);
    wrap.appendChild(track);
    wrap.appendChild(el("span", "pct", pct(r.utilisation)));
    td.appendChild(wrap);
    return td;
  }

  function renderLimits(state) {
    if (!changed("limits", [state.limits, sort])) return;
    const body = document.querySelector("#limits-table tbody");
    clear(body);
    const rows = sortedLimits(state.limits);
    for (const r of rows) {
      const status = pick(r.status, LIMIT_STATUSES, "UNKNOWN");
      const tr = el("tr", "row-" + status.toLowerCase());
      tr.dataset.limitId = r.limit_id;
      tr.dataset.scope = r.scope;
      tr.dataset.status = status;
      tr.appendChild(el("td", "c-limit mono", r.limit_id));
      tr.appendChild(el("td", "c-kind", r.kind));
      tr.appendChild(el("td", "c-scope mono", r.scope));
      const st = el("td", "c-status");
      st.appendChild(badge(status, status.toLowerCase()));
      tr.appendChild(st);
      tr.appendChild(el("td", "c-value num", withUnit(r.value, r.unit)));
      tr.appendChild(el("td", "c-warn num", withUnit(r.warn, r.unit)));
      tr.appendChild(el("td", "c-breach num", withUnit(r.breach, r.unit)));
      tr.appendChild(utilCell(r));
      tr.appendChild(el("td", "c-reason reason", r.reason || ""));
      body.appendChild(tr);
    }
    $("limits-empty").hidden = rows.length > 0;
    for (const th of document.querySelectorAll("#limits-table th")) {
      const button = th.querySelector("button[data-sort]");
      if (!button) continue;
      if (button.dataset.sort === sort.key) th.setAttribute("aria-sort", sort.dir === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  function onSort(event) {
    const button = event.target.closest("button[data-sort]");
    if (!button) return;
    const key = button.dataset.sort;
    if (sort.key === key) sort.dir = sort.dir === "desc" ? "asc" : "desc";
    else sort = { key: key, dir: "desc" };
    if (last) renderLimits(last);
  }

  // -- exposures (SVG bars) -------------------------------------------------------------------
  function barChart(container, rows, label) {
    clear(container);
    if (!rows.length) {
      container.appendChild(el("p", "empty", "No " + label + " exposure figures stored."));
      return;
    }
    const width = 560;
    const labelW = 110;
    const valueW = 90;
    const barW = width - labelW - valueW;
    const rowH = 34;
    const height = rows.length * rowH + 6;
    let max = 0;
    for (const r of rows) {
      if (isNum(r.gross_usd)) max = Math.max(max, Math.abs(r.gross_usd));
      if (isNum(r.net_usd)) max = Math.max(max, Math.abs(r.net_usd));
    }
    max = max || 1;
    const chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": label + " exposure" });
    rows.forEach((r, i) => {
      const y = i * rowH + 3;
      const g = svg("g", { "data-key": r.key, class: "exp-row" });
      g.appendChild(svg("text", { x: 0, y: y + 18 }, r.key));
      if (!isNum(r.gross_usd) && !isNum(r.net_usd)) {
        g.appendChild(svg("text", { x: labelW, y: y + 18, class: "unknown-text" }, "unknown"));
      } else {
        const gw = isNum(r.gross_usd) ? Math.abs(r.gross_usd) / max * barW : 0;
        const nw = isNum(r.net_usd) ? Math.abs(r.net_usd) / max * barW : 0;
        const gross = svg("rect", { x: labelW, y: y, width: gw.toFixed(1), height: 13, class: "bar-gross" });
        gross.appendChild(svg("title", {}, r.key + " gross " + usd(r.gross_usd)));
        const net = svg("rect", { x: labelW, y: y + 15, width: nw.toFixed(1), height: 13,
                                  class: isNum(r.net_usd) && r.net_usd < 0 ? "bar-net-neg" : "bar-net-pos" });
        net.appendChild(svg("title", {}, r.key + " net " + usd(r.net_usd)));
        g.appendChild(gross);
        g.appendChild(net);
        g.appendChild(svg("text", { x: width - valueW + 6, y: y + 11, class: "v-gross" }, "G " + usdShort(r.gross_usd)));
        g.appendChild(svg("text", { x: width - valueW + 6, y: y + 27, class: "v-net" }, "N " + usdShort(r.net_usd)));
      }
      chart.appendChild(g);
    });
    container.appendChild(chart);
  }

  function renderExposures(state) {
    const x = state.exposures;
    if (!changed("exposures", x)) return;
    barChart($("venue-chart"), x.venues, "venue");
    barChart($("asset-chart"), x.assets, "asset");
    $("exposures-note").textContent = x.available
      ? "Bars: gross (blue) and net (green long, red short). Figures as of " + when(x.as_of) + "."
      : "No exposure figures stored yet.";
  }

  // -- sources and alerts ---------------------------------------------------------------------
  function renderSources(state) {
    const body = document.querySelector("#sources-table tbody");
    const shape = state.sources.map((s) => Object.assign({}, s, { age_s: null }));
    if (!changed("sources", shape)) {
      // only the ages moved: update them in place
      const cells = body.querySelectorAll("td.c-age");
      state.sources.forEach((s, i) => { if (cells[i]) cells[i].textContent = age(s.age_s); });
      return;
    }
    clear(body);
    for (const s of state.sources) {
      const tr = el("tr");
      tr.dataset.source = s.key;
      tr.appendChild(el("td", "mono", s.key));
      tr.appendChild(el("td", null, s.kind));
      const st = el("td", "c-state");
      if (!s.ok) st.appendChild(badge("MISSING" + (s.error_code ? " " + s.error_code : ""), "missing"));
      else if (s.stale) st.appendChild(badge("STALE", "stale"));
      else st.appendChild(badge("OK", "ok"));
      tr.appendChild(st);
      tr.appendChild(el("td", "c-age num", age(s.age_s)));
      tr.appendChild(el("td", "mono time", when(s.as_of)));
      body.appendChild(tr);
    }
    $("sources-empty").hidden = state.sources.length > 0;
  }

  function renderAlerts(state) {
    const a = state.alerts;
    if (!changed("alerts", a)) return;
    const body = document.querySelector("#alerts-table tbody");
    clear(body);
    for (const item of a.items) {
      const tr = el("tr");
      tr.dataset.alertId = String(item.id);
      tr.dataset.delivery = pick(item.delivery, DELIVERIES, "pending");
      tr.appendChild(el("td", "mono time", when(item.detected_at)));
      tr.appendChild(el("td", null, item.kind));
      const st = el("td");
      const status = pick(item.status, LIMIT_STATUSES, "UNKNOWN");
      st.appendChild(badge(status, status.toLowerCase()));
      tr.appendChild(st);
      tr.appendChild(el("td", "mono", item.limit_id));
      tr.appendChild(el("td", "mono", item.scope));
      const dl = el("td", "c-delivery");
      const delivery = pick(item.delivery, DELIVERIES, "pending");
      const text = delivery === "sent" ? "delivered" : delivery;
      const b = badge(text, delivery);
      if (item.last_error_code) b.title = "last error " + item.last_error_code;
      if (item.held_by) b.title = "held back by " + item.held_by;
      dl.appendChild(b);
      tr.appendChild(dl);
      tr.appendChild(el("td", "mono", item.held_by || ""));
      tr.appendChild(el("td", "num", seconds(item.notify_latency_s)));
      tr.appendChild(el("td", "num", seconds(item.end_to_end_latency_s)));
      body.appendChild(tr);
    }
    $("alerts-empty").hidden = a.items.length > 0;
    $("alerts-summary").textContent = !a.available ? "The alert feed cannot be read."
      : a.items.length + " most recent; " + a.pending + " awaiting delivery, " + a.failed + " failed, "
        + (a.suppressed || 0) + " held back (silenced or acknowledged).";
  }

  // -- silences and acknowledgements (who holds what back, until when, why) ---------------------
  function renderControls(c, error) {
    if (!changed("controls", [c, error])) return;
    const silences = c ? c.silences.filter((x) => x.active) : [];
    const acks = c ? c.acknowledgements : [];
    const sBody = document.querySelector("#silences-table tbody");
    const aBody = document.querySelector("#acks-table tbody");
    clear(sBody);
    clear(aBody);
    for (const x of silences) {
      const tr = el("tr");
      tr.dataset.silenceId = String(x.silence_id);
      tr.appendChild(el("td", "mono", String(x.silence_id).slice(0, 8)));
      tr.appendChild(el("td", "mono", x.matchers.map((m) => m.name + m.op + JSON.stringify(m.value)).join(", ")));
      tr.appendChild(el("td", "mono time", when(x.starts_at)));
      tr.appendChild(el("td", "mono time", when(x.ends_at)));
      tr.appendChild(el("td", null, x.created_by));
      tr.appendChild(el("td", null, x.comment));
      sBody.appendChild(tr);
    }
    for (const x of acks) {
      const tr = el("tr");
      tr.dataset.correlationId = String(x.correlation_id || "");
      tr.appendChild(el("td", "mono time", when(x.acked_at)));
      tr.appendChild(el("td", "mono", x.limit_id));
      tr.appendChild(el("td", "mono", x.scope));
      const st = el("td");
      const status = pick(x.status, LIMIT_STATUSES, "UNKNOWN");
      st.appendChild(badge(status, status.toLowerCase()));
      tr.appendChild(st);
      tr.appendChild(el("td", null, x.acked_by));
      tr.appendChild(el("td", null, x.comment));
      aBody.appendChild(tr);
    }
    $("silences-table").hidden = silences.length === 0;
    $("acks-table").hidden = acks.length === 0;
    $("controls-summary").textContent = error !== null
      ? "Silences and acknowledgements cannot be read (" + error + ")."
      : silences.length + " active silence(s), " + acks.length
        + " acknowledged alert(s); their notifications are recorded, not sent.";
  }

  async function pollControls() {
    try {
      renderControls(await getJson(CONTROLS_URL), null);
    } catch (err) {
      renderControls(null, String((err && err.message) || err));
    }
  }

  // -- compliance timeline (SVG strips) -------------------------------------------------------
  function renderTimeline(tl) {
    // the window end moves every poll; redraw when the intervals changed or a minute passed
    if (!changed("timeline", [tl.available, tl.error, tl.series, String(tl.end).slice(0, 16)])) return;
    const box = $("timeline");
    clear(box);
    if (!tl.available) {
      box.appendChild(el("p", "empty", tl.error || "The compliance timeline is not available."));
      return;
    }
    if (!tl.series.length) {
      box.appendChild(el("p", "empty", "No compliance history in this window."));
      return;
    }
    const t0 = new Date(tl.start).getTime();
    const t1 = new Date(tl.end).getTime();
    const W = 1000; // strip coordinates; the SVG stretches to the row's width
    const x = (iso) => Math.max(0, Math.min(1, (new Date(iso).getTime() - t0) / (t1 - t0))) * W;
    const hours = (t1 - t0) / 3600000;
    const step = hours <= 24 ? 4 : Math.ceil(hours / 6);

    const axis = el("div", "tl-axis");
    axis.appendChild(el("div", "tl-label", ""));
    const ticks = el("div", "tl-ticks");
    for (let h = 0; h <= hours + 1e-9; h += step) {
      const tick = el("span", "tl-tick", new Date(t0 + h * 3600000).toISOString().slice(11, 16));
      tick.style.left = ((h / hours) * 100).toFixed(3) + "%";
      if (h === 0) tick.classList.add("first");
      else if (h + step > hours + 1e-9) tick.classList.add("last");
      ticks.appendChild(tick);
    }
    axis.appendChild(ticks);
    box.appendChild(axis);

    for (const s of tl.series) {
      const row = el("div", "tl-row");
      row.dataset.limitId = s.limit_id;
      row.dataset.scope = s.scope;
      const label = el("div", "tl-label", s.limit_id + "  " + s.scope);
      label.title = s.limit_id + " " + s.scope;
      row.appendChild(label);
      const strip = svg("svg", { class: "tl-strip", viewBox: "0 0 " + W + " 14", preserveAspectRatio: "none",
                                 role: "img", "aria-label": s.limit_id + " " + s.scope });
      strip.appendChild(svg("rect", { x: 0, y: 0, width: W, height: 14, class: "seg-none" }));
      for (const seg of s.segments) {
        const status = pick(seg.status, LIMIT_STATUSES, "UNKNOWN");
        const w = Math.max(5, x(seg.end) - x(seg.start)); // a status just seen must still show
        const x0 = Math.min(x(seg.start), W - w);
        const rect = svg("rect", { x: x0.toFixed(2), y: 0, width: w.toFixed(2), height: 14,
                                   class: "seg seg-" + status.toLowerCase(), "data-status": status });
        rect.appendChild(svg("title", {}, status + " " + when(seg.start) + " → " + when(seg.end) + (seg.open ? " (current)" : "")));
        strip.appendChild(rect);
      }
      row.appendChild(strip);
      box.appendChild(row);
    }
  }

  // -- polling --------------------------------------------------------------------------------
  function renderAll() {
    if (last) {
      renderHeader(last);
      renderPortfolio(last);
      renderLimits(last);
      renderExposures(last);
      renderSources(last);
      renderAlerts(last);
    } else if (failure !== null) {
      const badgeEl = $("overall-status");
      badgeEl.textContent = "UNKNOWN";
      badgeEl.className = "status status-unknown";
      badgeEl.dataset.status = "UNKNOWN";
    }
    renderBanner();
    $("last-refresh").textContent = lastOkAt
      ? lastOkAt.toISOString().slice(11, 19) + "Z (every " + (refreshMs / 1000) + " s)" : "never";
  }

  async function pollTimeline() {
    lastTimelineAt = Date.now();
    try {
      renderTimeline(await getJson(TIMELINE_URL));
    } catch (err) {
      renderTimeline({ available: false, error: "timeline unavailable (" + (err.message || err) + ")", series: [] });
    }
  }

  let timer = null;
  let inFlight = false;

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  async function poll() {
    if (inFlight) return;
    inFlight = true;
    try {
      const state = await getJson(STATE_URL);
      last = state;
      lastOkAt = new Date();
      failure = null;
      if (!refreshOverrideMs && isNum(state.refresh_interval_s) && state.refresh_interval_s > 0) {
        refreshMs = state.refresh_interval_s * 1000;
      }
      document.body.dataset.generatedAt = state.generated_at;
    } catch (err) {
      failure = err && err.name === "AbortError" ? "timed out" : String((err && err.message) || err);
    }
    try {
      renderAll();
    } finally { // a rendering bug must not stop the polling
      document.body.dataset.refreshCount = String(Number(document.body.dataset.refreshCount || "0") + 1);
      inFlight = false;
      schedule(refreshMs);
    }
    if (failure === null && Date.now() - lastTimelineAt >= TIMELINE_EVERY_MS) pollTimeline();
    if (failure === null) pollControls();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelector("#limits-table thead").addEventListener("click", onSort);
    // browsers throttle timers in hidden tabs: catch up as soon as the tab is shown again
    document.addEventListener("visibilitychange", () => { if (!document.hidden) schedule(0); });
    poll();
  });
})();
