"""Scoring of the hot-path load benches (``bench_hot_path_load.py``, ``bench_hot_path_floor.py``):
the ground truth's crossings matched with Slack messages, outbox rows and compliance intervals,
the service's stage histograms, and the one table both benches print."""

from __future__ import annotations

import math
import os
import sys
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from risk_monitor.adapters.sql import Storage
from risk_monitor.domain.model import alert_fingerprint

LIMIT_ID = "perp_notional"
LATE_S = 1.0


@dataclass
class Crossing:
    """One crossing the publisher made: the tick that crossed, its send time, the new status."""

    instrument: str
    sent_at: float
    status: str  # BREACH or OK


#: the service's stage histograms (issue 10: receive, decide, commit, deliver) and what competes
#: with them for the interpreter (full evaluations, writes, garbage collection)
STAGES = {"receive": "risk_monitor_hot_path_receive_seconds",
          "decide": "risk_monitor_hot_path_decide_seconds",
          "commit": "risk_monitor_hot_path_commit_seconds",
          "deliver": 'risk_monitor_alert_latency_seconds{stage="notify"',
          "deliver handoff": 'risk_monitor_alert_delivery_seconds{step="handoff"',
          "deliver send": 'risk_monitor_alert_delivery_seconds{step="send"',
          "deliver record": 'risk_monitor_alert_delivery_seconds{step="record"',
          "full evaluation": "risk_monitor_hot_path_evaluation_seconds",
          "write changes": 'risk_monitor_hot_path_write_seconds{step="changes"',
          "write persist": 'risk_monitor_hot_path_write_seconds{step="persist"'}


def service_metrics(port: int) -> dict[str, float]:
    """The service's own counters of how ticks were decided, and its stage histograms."""
    wanted = ("risk_monitor_hot_path_tick_decisions_total", "risk_monitor_hot_path_evaluations_total",
              "risk_monitor_hot_path_writes_merged_total", "risk_monitor_market_ticks_total",
              "risk_monitor_hot_path_write_seconds", "risk_monitor_hot_path_commit_seconds",
              "risk_monitor_hot_path_receive_seconds", "risk_monitor_hot_path_decide_seconds",
              "risk_monitor_hot_path_evaluation_seconds", "risk_monitor_alert_latency_seconds",
              "risk_monitor_alert_delivery_seconds",
              "risk_monitor_gc_", "risk_monitor_hot_path_detection_latency_seconds_count")
    out: dict[str, float] = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
    except OSError:
        return out
    for line in text.decode().splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _bucket_counts(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of one histogram's buckets, ascending."""
    base, _, label = name.partition("{")
    out = []
    for key, value in metrics.items():
        if key.startswith(base + "_bucket{") and (not label or label in key):
            bound = key.rsplit('le="', 1)[1].split('"')[0]
            out.append((math.inf if bound == "+Inf" else float(bound), value))
    return sorted(out)


def stage_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, str]:
    """Per stage over the window (bucket deltas): count, mean, and the bucket bounds holding
    the p50 and p99 (a histogram only knows its buckets)."""
    out: dict[str, str] = {}
    for label, name in STAGES.items():
        b0 = dict(_bucket_counts(before, name))
        buckets = [(le, n - b0.get(le, 0.0)) for le, n in _bucket_counts(after, name)]
        if not buckets or buckets[-1][1] <= 0:
            continue
        total = buckets[-1][1]
        base = name.split("{")[0]
        labels = ("{" + name.split("{", 1)[1] + "}") if "{" in name else ""
        mean = ((after.get(f"{base}_sum{labels}", 0.0) - before.get(f"{base}_sum{labels}", 0.0))
                / total)

        def bound(q: float, buckets: list[tuple[float, float]] = buckets,
                  total: float = total) -> str:
            le = next(le for le, n in buckets if n >= q * total)
            return "inf" if math.isinf(le) else f"{le * 1000:g}"
        out[label] = (f"n={total:.0f} mean={mean * 1000:.2f} ms p50<={bound(0.5)} ms "
                      f"p99<={bound(0.99)} ms")
    gc_total = {k: v - before.get(k, 0.0) for k, v in after.items()
                if k.startswith("risk_monitor_gc_pause_seconds")}
    if gc_total:
        out["gc"] = ", ".join(f"{k.split('generation=')[1].rstrip('}')} {v * 1000:.0f} ms"
                              for k, v in sorted(gc_total.items())) + " (total per generation)"
        out["gc max"] = ", ".join(f"{k.split('generation=')[1].rstrip('}')} {v * 1000:.1f} ms"
                                  for k, v in sorted(after.items())
                                  if k.startswith("risk_monitor_gc_pause_max_seconds"))
    return out


def accepted_ticks(metrics: dict[str, float]) -> float | None:
    """Ticks the service's feed accepted so far (None when the counter was not read)."""
    values = [v for k, v in metrics.items()
              if k.startswith("risk_monitor_market_ticks_total") and 'outcome="accepted"' in k]
    return sum(values) if values else None


def outbox_rows(database_url: str) -> list[dict[str, Any]]:
    storage = Storage.open(database_url)
    try:
        return [{"fingerprint": r.fingerprint, "alert_status": r.alert_status,
                 "detected_at": r.detected_at} for r in storage.outbox.rows(limit=1_000_000)]
    finally:
        storage.close()


def compliance_rows(database_url: str) -> list[tuple[str, str, float]]:
    """(scope, status, since) of every compliance interval: the decisions, paged or not."""
    storage = Storage.open(database_url)
    try:
        far = datetime(2100, 1, 1, tzinfo=UTC)
        return [(i.scope, i.status.value, i.since.timestamp())
                for i in storage.compliance.intervals(datetime(2000, 1, 1, tzinfo=UTC), far,
                                                      limit_id=LIMIT_ID)]
    finally:
        storage.close()


def score(truth: list[Crossing], slack: list[dict[str, Any]],
          rows: list[dict[str, Any]],
          intervals: list[tuple[str, str, float]]) -> dict[str, Any]:
    """Match each ground-truth crossing with its first notice after the crossing tick, and
    with the compliance interval its decision opened (a crossing can be decided and recorded
    but not paged: that tells a decision bug from a delivery or alert-policy one)."""
    opened: dict[tuple[str, str], list[float]] = {}
    for scope, status, since in intervals:
        opened.setdefault((scope, status), []).append(since)
    undecided = 0
    posts: dict[tuple[str, str], list[float]] = {}
    for message in slack:
        meta = (message.get("params") or {}).get("metadata") or {}
        payload = meta.get("event_payload") if isinstance(meta, dict) else None
        if payload and payload.get("limit_id") == LIMIT_ID:
            key = (str(payload.get("scope")), str(payload.get("status")))
            posts.setdefault(key, []).append(float(message["received_at"]))
    decided: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        key = (str(row["fingerprint"]), str(row["alert_status"]))
        decided.setdefault(key, []).append(row["detected_at"].timestamp())
    to_slack, to_decision, missed, late = [], [], 0, 0
    decision_to_slack: list[float] = []
    for crossing in truth:
        scope = f"venue:binance|instrument:{crossing.instrument}"
        if not any(t >= crossing.sent_at - 0.001 for t in opened.get((scope, crossing.status),
                                                                      [])):
            undecided += 1
        seen = [t for t in posts.get((scope, crossing.status), []) if t >= crossing.sent_at]
        if not seen:
            missed += 1
            if os.environ.get("BENCH_DEBUG"):
                print("missed", crossing, "posts", posts.get((scope, crossing.status)),
                      "intervals", opened.get((scope, crossing.status)), file=sys.stderr)
            continue
        latency = min(seen) - crossing.sent_at
        to_slack.append(latency)
        late += latency > LATE_S
        fingerprint = alert_fingerprint(LIMIT_ID, scope)
        when = [t for t in decided.get((fingerprint, crossing.status), [])
                if t >= crossing.sent_at - 0.001]
        if when:
            to_decision.append(max(0.0, min(when) - crossing.sent_at))
            decision_to_slack.append(max(0.0, min(seen) - min(when)))
    if os.environ.get("BENCH_DEBUG"):
        print("outbox rows", len(rows), rows[:2], "decided keys", list(decided)[:2],
              file=sys.stderr)
    return {"crossings": len(truth), "missed": missed, "late": late, "undecided": undecided,
            "to_decision": to_decision, "to_slack": to_slack,
            "decision_to_slack": decision_to_slack}


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


HEADER = ("| rate/s | run | published/s | crossings | missed | not decided | late>1s |"
          " tick→decision p50/p99/max ms | tick→Slack p50/p99/max ms | CPU % | CPU µs/tick |"
          " RSS MB | load 1m | publisher CPU % |")
RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"


def table_row(rate: float, run: int, r: dict[str, Any]) -> str:
    """One run's line of the table (both load benches print the same columns)."""
    d = [v * 1000 for v in r["to_decision"]]
    s = [v * 1000 for v in r["to_slack"]]
    return (f"| {rate:g} | {run} | {r['published']:.0f} | {r['crossings']} | {r['missed']}"
            f" | {r['undecided']} | {r['late']} | {pct(d, .5):.1f} / {pct(d, .99):.1f} / "
            f"{max(d, default=math.nan):.1f} | {pct(s, .5):.1f} / {pct(s, .99):.1f} / "
            f"{max(s, default=math.nan):.1f} | {r['cpu_pct']:.0f} | {r['cpu_us_per_tick']:.0f} | "
            f"{r['rss_mb']:.0f} | {os.getloadavg()[0]:.1f} | {r['publisher_cpu_pct']:.0f} |")


