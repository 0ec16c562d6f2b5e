"""What an alert message says: the one place where Slack text, Block Kit, Slack message metadata
and Alertmanager annotations are built from a notification.

A message tells the person on call what to do: the limit's owner and runbook (limits YAML), the
value against the warn and breach levels in the limit's unit, the headroom to the breach level
(and in USD for %/x kinds, from the evaluation's denominator), how long the episode has been firing (or, on ``resolved``, how long it
lasted), and links to the dashboard (``alerts.dashboard_url``), the lineage record (the Dagster
event of the evaluation, or its run) and the ``risk-monitor audit trace`` command for the
correlation id. Every sink renders from here, so they never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from risk_monitor.domain.limits import KIND_SPECS, LimitKind
from risk_monitor.domain.model import LimitStatus, Notification, NotificationKind

METADATA_EVENT_TYPE = "risk_monitor_alert"
STATUS_EMOJI: Mapping[LimitStatus, str] = {
    LimitStatus.OK: ":white_check_mark:",
    LimitStatus.WARN: ":warning:",
    LimitStatus.BREACH: ":rotating_light:",
    LimitStatus.UNKNOWN: ":grey_question:",
}
KIND_LABEL: Mapping[NotificationKind, str] = {
    NotificationKind.FIRING: "Firing",
    NotificationKind.ESCALATED: "Escalated",
    NotificationKind.DEESCALATED: "De-escalated",
    NotificationKind.REPEAT: "Still firing",
    NotificationKind.RESOLVED: "Resolved",
}


def _esc(text: str) -> str:
    """Slack's three control characters, escaped in mrkdwn (ids and reasons are data)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.4f}".rstrip("0").rstrip(".")


def unit_of(n: Notification) -> str:
    """The limit kind's unit (USD, %, x, s); "" for a kind this version does not know."""
    try:
        return KIND_SPECS[LimitKind(n.limit_kind)].unit
    except ValueError:
        return ""


def _amount(value: float | None, unit: str) -> str:
    text = _num(value)
    if text == "n/a" or not unit:
        return text
    return f"{text}{unit}" if unit in ("%", "x") else f"{text} {unit}"


def _pct(utilisation: float | None) -> str:
    if utilisation is None or not math.isfinite(utilisation):
        return "n/a"
    return f"{utilisation * 100:.1f}%"


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "n/a"


def _shown_status(n: Notification) -> LimitStatus:
    return LimitStatus.OK if n.kind is NotificationKind.RESOLVED else n.status


def duration_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def episode_age_s(n: Notification) -> float | None:
    """Seconds from the episode's start to this notification (time in status / duration)."""
    raw = n.context.get("episode_started_at")
    if not isinstance(raw, str):
        return None
    try:
        started = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return (n.detected_at - started).total_seconds()


def headroom(n: Notification) -> float | None:
    """Distance from the value to the breach level, in the limit's unit (USD for notional
    kinds); negative once breached. Direction from warn vs breach (lower-is-worse limits)."""
    if n.value is None or not math.isfinite(n.value) or not math.isfinite(n.breach_level):
        return None
    lower_is_worse = n.warn_level is not None and n.warn_level > n.breach_level
    return n.value - n.breach_level if lower_is_worse else n.breach_level - n.value


#: what the USD headroom of a %/x kind is an amount of (exposure added, or equity lost)
_USD_HEADROOM_OF: Mapping[str, str] = {
    LimitKind.CONCENTRATION.value: "exposure",
    LimitKind.LEVERAGE.value: "gross notional",
    LimitKind.DRAWDOWN.value: "equity loss",
}
#: kinds whose headroom has no USD figure, and why (said in the message)
_NO_USD_HEADROOM: Mapping[str, str] = {
    LimitKind.LIQUIDATION_DISTANCE.value: "a price distance to liquidation, not an amount",
    LimitKind.DATA_AGE.value: "a data age, not an amount",
}


def headroom_usd(n: Notification) -> float | None:
    """The headroom in USD: as is for USD kinds; for %/x kinds, through the evaluation's own
    denominator (``usd_per_unit``: equity, peak equity); None where it is not defined."""
    room = headroom(n)
    if room is None or n.usd_per_unit is None or not math.isfinite(n.usd_per_unit):
        return None
    return room * n.usd_per_unit


def headroom_text(n: Notification) -> str:
    """Headroom in the limit's unit and, for %/x kinds, in USD (or why there is no USD
    figure): ``2.5x ≈ 250,000 USD of gross notional``."""
    room = headroom(n)
    unit = unit_of(n)
    text = _amount(room, unit)
    if room is not None and unit not in ("", "USD"):
        usd = headroom_usd(n)
        if usd is not None and n.limit_kind in _USD_HEADROOM_OF:
            text += f" ≈ {_amount(usd, 'USD')} of {_USD_HEADROOM_OF[n.limit_kind]}"
        else:
            why = _NO_USD_HEADROOM.get(n.limit_kind, "the denominator (equity) is not known "
                                       "or not positive")
            text += f" (no USD figure: {why})"
    return f"{text} (breached)" if room is not None and room < 0 else text


def trace_command(n: Notification) -> str:
    """The CLI line that follows this alert to its data, limit version and code version."""
    return f"risk-monitor audit trace {n.correlation_id}"


def _text(n: Notification, key: str) -> str:
    value = n.context.get(key)
    return value if isinstance(value, str) else ""


def links(n: Notification, ui_url: str, dashboard_url: str | None = None) -> dict[str, str]:
    """Runbook, dashboard and lineage links: the Dagster event of the evaluation (hot path) or
    the Dagster run, and the ``limit_status`` asset."""
    base = ui_url.rstrip("/")
    found: dict[str, str] = {}
    if runbook := _text(n, "runbook_url"):
        found["Runbook"] = runbook
    dashboard = _text(n, "dashboard_url") or dashboard_url
    if dashboard:
        sep = "&" if "?" in dashboard else "?"
        found["Dashboard"] = f"{dashboard}{sep}alert={quote(n.correlation_id)}"
    if event := _text(n, "dagster_event_url"):
        found["Dagster event"] = event
    run_id = n.context.get("run_id")
    if run_id:
        found["Dagster run"] = f"{base}/runs/{run_id}"
    asset = str(n.context.get("asset_key") or "limit_status")
    found["Asset"] = f"{base}/assets/{asset}"
    return found


def summary_line(n: Notification) -> str:
    """Value against the levels, in the limit's unit, and utilisation."""
    unit = unit_of(n)
    return (f"value {_amount(n.value, unit)} vs warn {_amount(n.warn_level, unit)} / breach "
            f"{_amount(n.breach_level, unit)} ({_pct(n.utilisation)} of breach level)")


def render_text(n: Notification) -> str:
    """Plain-text fallback (notifications, screen readers, clients without Block Kit, file
    sink): everything the blocks say that a person needs to act."""
    status = _shown_status(n)
    text = (f"{STATUS_EMOJI[status]} {status.value} [{n.kind.value}] {n.limit_id} ({n.scope}): "
            f"{summary_line(n)}, headroom {headroom_text(n)} - correlation {n.correlation_id}")
    age = episode_age_s(n)
    if age is not None:
        label = "episode lasted" if n.kind is NotificationKind.RESOLVED else "firing for"
        text += f" - {label} {duration_text(age)}"
    if owner := _text(n, "owner"):
        text += f" - owner {owner}"
    if runbook := _text(n, "runbook_url"):
        text += f" - runbook {runbook}"
    return text


#: context key of an episode's Dagster event links, newest first (``[{label, url}]``), shown on
#: the thread's first message so that a later state's ``chat.update`` keeps the earlier ones
EVENT_LINKS_KEY = "dagster_event_links"
MAX_EVENT_LINKS = 10


def render_blocks(n: Notification, ui_url: str, *, root: bool = False,
                  dashboard_url: str | None = None) -> list[dict[str, Any]]:
    """Block Kit message; ``root`` renders the thread's first message showing the latest state."""
    status = _shown_status(n)
    title = f"{STATUS_EMOJI[status]} {status.value}: {n.limit_id} ({n.scope})"
    summary = f"*{KIND_LABEL[n.kind]}* - {summary_line(n)}"
    owner, runbook = _text(n, "owner"), _text(n, "runbook_url")
    todo = (f"*What to do*: follow the <{runbook}|runbook>" if runbook
            else f"*What to do*: no runbook for `{_esc(n.limit_id)}` (set `runbook_url` in the "
            "limits YAML)")
    if owner:
        todo += f"; owner *{_esc(owner)}*"
    fields = [
        ("Limit", f"`{_esc(n.limit_id)}` ({_esc(n.limit_kind)})"),
        ("Scope", f"`{_esc(n.scope)}`"),
        ("Status", f"{STATUS_EMOJI[status]} {status.value}"),
        ("Utilisation", _pct(n.utilisation)),
        ("Headroom to breach", headroom_text(n)),
        ("Detected", _time(n.detected_at)),
        ("Source event", _time(n.source_event_time)),
        ("Correlation id", f"`{_esc(n.correlation_id)}`"),
        ("Config version", f"`{_esc(n.config_version)}`"),
    ]
    if owner:
        fields.insert(0, ("Owner", _esc(owner)))
    age = episode_age_s(n)
    if age is not None:
        label = "Episode lasted" if n.kind is NotificationKind.RESOLVED else "Time in status"
        fields.append((label, duration_text(age)))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": summary[:3000]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": todo[:3000]}},
    ]
    for start in range(0, len(fields), 10):  # Slack takes at most 10 fields per section
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{label}*\n{value}"[:2000]}
            for label, value in fields[start:start + 10]
        ]})
    notes = []
    if n.reason:
        notes.append(f"Reason: {_esc(n.reason)}")
    versions = n.context.get("data_versions")
    if isinstance(versions, Mapping) and versions:
        notes.append("Inputs: " + ", ".join(f"{_esc(str(k))}@{_esc(str(v)[:12])}"
                                            for k, v in versions.items()))
    notes.append(f"Lineage: `{_esc(trace_command(n))}`")
    events = n.context.get(EVENT_LINKS_KEY)
    if isinstance(events, list) and events:  # the thread's first message: every event so far
        notes.append("Dagster events, newest first: " + " · ".join(
            f"<{e['url']}|{_esc(str(e['label']))}>" for e in events[:MAX_EVENT_LINKS]))
    if root and n.kind is not NotificationKind.FIRING:
        notes.append(f"Updated {_time(n.detected_at)} ({KIND_LABEL[n.kind].lower()}); "
                     "history in thread")
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": note[:3000]} for note in notes[:10]
    ]})
    blocks.append({"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": label},
         "url": url[:3000], "action_id": f"open_{i}"}
        for i, (label, url) in enumerate(links(n, ui_url, dashboard_url).items())
    ]})
    return blocks


def message_metadata(n: Notification) -> dict[str, Any]:
    """Slack message metadata: lets anyone count and trace posted states exactly."""
    payload = {name: getattr(n, name) for name in (
        "idempotency_key", "fingerprint", "limit_id", "scope", "episode", "correlation_id")}
    return {"event_type": METADATA_EVENT_TYPE, "event_payload": {
        **payload, "kind": n.kind.value, "status": n.status.value, "severity": n.severity.value}}


#: metadata event type of thread notes (acknowledged, silenced): not an alert state
NOTE_EVENT_TYPE = "risk_monitor_note"


def note_metadata(key: str) -> dict[str, Any]:
    """Slack message metadata of a thread note: its idempotency key, to adopt it after a crash."""
    return {"event_type": NOTE_EVENT_TYPE, "event_payload": {"idempotency_key": key}}


def alertmanager_annotations(n: Notification, ui_url: str, dashboard_url: str | None = None
                ) -> dict[str, str]:
    """Alertmanager annotations: the same facts as the Slack message, as strings."""
    found = {
        "summary": f"{_shown_status(n).value} {n.limit_id} ({n.scope})",
        "description": render_text(n),
        "value": _amount(n.value, unit_of(n)),
        "warn_level": _amount(n.warn_level, unit_of(n)),
        "breach_level": _amount(n.breach_level, unit_of(n)),
        "headroom": headroom_text(n),
        "utilisation": _pct(n.utilisation),
        "correlation_id": n.correlation_id,
        "config_version": n.config_version,
        "trace": trace_command(n),
    }
    if owner := _text(n, "owner"):
        found["owner"] = owner
    for label, url in links(n, ui_url, dashboard_url).items():
        key = {"Runbook": "runbook_url", "Dashboard": "dashboard_url",
               "Dagster event": "lineage_url", "Dagster run": "dagster_run_url",
               "Asset": "dagster_asset_url"}[label]
        found[key] = url
    age = episode_age_s(n)
    if age is not None:
        found["episode_duration" if n.kind is NotificationKind.RESOLVED
              else "time_in_status"] = duration_text(age)
    return found
