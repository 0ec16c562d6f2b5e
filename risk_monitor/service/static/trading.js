// Risk Monitor dashboard, trading panel: polls v1/dashboard/trading. Vanilla JS; server values
// go in through textContent or a whitelisted class name only.
"use strict";

(function () {
  const URL = "v1/dashboard/trading";
  const STATES = ["ACTIVE", "REDUCING", "HALTED"];
  const BREAKS = ["OK", "BREAK", "UNKNOWN"];
  const override = Number(new URLSearchParams(window.location.search).get("refresh"));
  const refreshMs = override >= 1 && override <= 300 ? override * 1000 : 3000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 4 });
  const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? fmt.format(v) : "—");
  const usd = (v) => (typeof v === "number" && Number.isFinite(v) ? money.format(v) : "—");
  const pick = (v, allowed, fallback) => (allowed.includes(v) ? v : fallback);

  function fill(tableId, emptyId, rows, cells) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren();
    for (const row of rows) {
      const tr = el("tr");
      for (const [text, cls] of cells(row)) tr.appendChild(el("td", cls || "", text));
      body.appendChild(tr);
    }
    if (emptyId) $(emptyId).hidden = rows.length > 0;
  }

  function states(list) {
    const box = $("trading-states");
    box.replaceChildren();
    for (const s of list) {
      const state = pick(s.state, STATES, "HALTED");
      const chip = el("span", "trading-state trading-" + state.toLowerCase(),
        s.scope + ": " + state);
      chip.dataset.scope = s.scope;
      chip.dataset.state = state;
      if (s.cause) chip.title = s.origin + " — " + s.cause;
      box.appendChild(chip);
    }
  }

  function chart(history) {
    const box = $("history-chart");
    box.replaceChildren();
    const series = [["equity", "#1565c0"], ["gross", "#ef6c00"], ["net", "#6a1b9a"],
      ["realised", "#2e7d32"]];
    const w = 600, h = 140;
    const root = document.createElementNS(SVG, "svg");
    root.setAttribute("viewBox", `0 0 ${w} ${h + 20}`);
    root.setAttribute("role", "img");
    root.setAttribute("aria-label", "equity, exposure and realised P&L over the last hour");
    for (const [key, colour] of series) {
      const pts = history.map((p, i) => [i, p[key]]).filter(([, v]) => typeof v === "number");
      if (pts.length < 1) continue;
      const vals = pts.map(([, v]) => v);
      const lo = Math.min(...vals), hi = Math.max(...vals), span = hi - lo || 1;
      const n = Math.max(history.length - 1, 1);
      const d = pts.map(([i, v], k) => `${k ? "L" : "M"}${(i / n) * w},${h - ((v - lo) / span) * (h - 10) - 5}`).join(" ");
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", colour);
      path.dataset.series = key;
      root.appendChild(path);
    }
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", "0");
    label.setAttribute("y", String(h + 16));
    label.textContent = history.length + " samples: equity (blue), gross (orange), net (purple), realised (green)";
    root.appendChild(label);
    box.appendChild(root);
  }

  function render(doc) {
    states(doc.states || []);
    fill("orders-table", "orders-empty", doc.orders || [], (o) => [
      [o.at], [o.venue], [o.instrument], [o.side], [num(o.quantity), "num"],
      [o.allowed ? "ALLOW" : "DENY", o.allowed ? "decision-allow" : "decision-deny"],
      [(o.codes || []).join(", ")], [o.trading_state], [o.client_order_id]]);
    fill("positions-table", "positions-empty", doc.positions || [], (p) => [
      [p.venue], [p.instrument], [p.side], [num(p.quantity), "num"], [usd(p.entry_price), "num"],
      [usd(p.mark_price), "num"], [usd(p.notional), "num"], [usd(p.unrealized_pnl), "num"]]);
    fill("fills-table", "fills-empty", doc.fills || [], (f) => [
      [f.seen_at], [f.venue], [f.instrument], [f.side], [num(f.quantity), "num"],
      [usd(f.price), "num"], [num(f.fee), "num"], [f.order_id]]);
    fill("realised-table", null, doc.realised || [], (r) => [
      [r.venue], [r.instrument], [num(r.fills), "num"], [usd(r.gross), "num"],
      [usd(r.fees), "num"], [usd(r.funding), "num"], [usd(r.net), "num"],
      [usd(r.venue_reported), "num"]]);
    chart(doc.history || []);
    fill("breach-time-table", "breach-time-empty", doc.time_in_breach || [], (b) => [
      [b.limit_id], [b.scope], [Math.round(b.seconds) + " s", "num"]]);
    const recon = doc.reconciliation || {};
    $("recon-note").textContent = recon.computed
      ? (recon.breaks || []).length + " break(s) of " + recon.compared + " items compared"
      : "not reconciled: " + (recon.reason || "unknown");
    fill("recon-table", null, recon.breaks || [], (b) => {
      const status = pick(b.status, BREAKS, "UNKNOWN");
      return [[b.venue], [b.item], [b.book], [num(b.desk), "num"], [num(b.reported), "num"],
        [num(b.difference), "num"], [status, "break-" + status.toLowerCase()], [b.reason]];
    });
    const panel = $("trading-panel");
    panel.dataset.tradingRefresh = String(Number(panel.dataset.tradingRefresh || 0) + 1);
  }

  async function poll() {
    try {
      const response = await fetch(URL, { headers: { Accept: "application/json" } });
      if (response.ok) render(await response.json());
    } catch (err) {
      $("recon-note").textContent = "trading panel unavailable: " + String(err).slice(0, 80);
    }
    window.setTimeout(poll, refreshMs);
  }

  document.addEventListener("DOMContentLoaded", poll);
})();
