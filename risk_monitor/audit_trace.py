"""Follow an alert back to the data, limit configuration and code that produced it.

A compliance reviewer starts from anything an alert shows (its correlation id, the Slack
message's ts or "channel:ts", the idempotency key in the Slack message metadata, the
fingerprint, or the Dagster run id) and gets the whole chain, whichever path raised it: Slack
message(s) -> alert episode -> evaluation (Dagster run or service instance) -> each input's data
version and as-of time -> limit configuration version (the document on request) -> code
version. Each detection also names the audit entry (hash) that sealed it; ``audit verify``
proves those entries were not edited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from risk_monitor.adapters.sql import AuditRecord, OutboxRow, Storage
from risk_monitor.adapters.sql.schema import outbox


@dataclass(frozen=True)
class NotificationTrace:
    idempotency_key: str
    sequence: int
    kind: str
    alert_status: str
    severity: str
    delivery: str  # pending | sending | sent | failed
    attempts: int
    delivery_ref: str | None
    last_error: str | None
    source_event_time: datetime | None
    detected_at: datetime
    notified_at: datetime | None

    @property
    def detect_latency_s(self) -> float | None:
        if self.source_event_time is None:
            return None
        return (self.detected_at - self.source_event_time).total_seconds()

    @property
    def notify_latency_s(self) -> float | None:
        if self.notified_at is None:
            return None
        return (self.notified_at - self.detected_at).total_seconds()


@dataclass(frozen=True)
class EpisodeTrace:
    correlation_id: str
    fingerprint: str
    limit_id: str
    scope: str
    notifications: list[NotificationTrace]
    detections: list[dict[str, Any]]  # audit records: run / instance, inputs, versions
    config_versions: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def _episode_keys(storage: Storage, key: str) -> list[tuple[str, str]]:
    """(correlation_id, fingerprint) pairs the key names, oldest first."""
    c = outbox.c
    query = sa.select(c.correlation_id, c.fingerprint, sa.func.min(c.id).label("first")).where(
        sa.or_(c.correlation_id == key, c.idempotency_key == key, c.fingerprint == key,
              c.delivery_ref == key, c.delivery_ref.endswith(f":{key}", autoescape=True))
    ).group_by(c.correlation_id, c.fingerprint)
    with storage.engine.connect() as conn:
        rows = list(conn.execute(query.order_by("first")))
    pairs = [(str(r.correlation_id), str(r.fingerprint)) for r in rows]
    if not pairs:  # a Dagster run id or service trigger: episodes it notified
        for record in storage.audit.by_run(key):
            if record.correlation_id:
                fp = str(record.payload.get("fingerprint", ""))
                if (record.correlation_id, fp) not in pairs:
                    pairs.append((record.correlation_id, fp))
    return pairs


def _notification(row: OutboxRow) -> NotificationTrace:
    return NotificationTrace(
        idempotency_key=row.idempotency_key, sequence=row.sequence, kind=row.kind,
        alert_status=row.alert_status, severity=row.severity, delivery=row.status,
        attempts=row.attempts, delivery_ref=row.delivery_ref, last_error=row.last_error,
        source_event_time=row.source_event_time, detected_at=row.detected_at,
        notified_at=row.notified_at)


def _inputs(p: dict[str, Any]) -> list[dict[str, Any]]:
    """Each input's data version and as-of time, from either path's context: the Dagster run's
    ``input_data_versions`` (latest materialisations) or the hot path's lineage record."""
    found: dict[str, dict[str, Any]] = {}
    for name, recorded in (p.get("input_data_versions") or {}).items():
        version = recorded or {}
        found[name] = {"input": name, "data_version": version.get("data_version"),
                       "as_of": version.get("as_of"), "run_id": version.get("run_id")}
        venues = version.get("venues")
        if venues:  # the hot path hashes each venue's part alone, like the assets' metadata
            found[name]["venues"] = {venue: {"data_version": part.get("data_version"),
                                             "as_of": part.get("as_of"),
                                             "rows": part.get("rows")}
                                     for venue, part in sorted(venues.items())}
    for name, seen in (p.get("inputs") or {}).items():  # per-source coverage (service)
        entry = found.setdefault(name, {"input": name, "data_version": None, "as_of": None,
                                        "run_id": None})
        entry["as_of"] = entry["as_of"] or seen.get("as_of")
        entry["ok"] = seen.get("ok")
    return sorted(found.values(), key=lambda i: str(i["input"]))


def _detection(record: AuditRecord) -> dict[str, Any]:
    p = record.payload
    return {
        "audit_entry": record.id,
        "entry_hash": record.entry_hash,
        "evaluation": (f"dagster run {record.run_id}" if record.run_id
                       else f"service instance {p.get('instance_id')}"),
        "inputs": _inputs(p),
        "dagster_event_url": p.get("dagster_event_url"),
        "evaluation_id": p.get("evaluation_id"),  # tag of the hot path's Dagster event
        "dagster_data_version": p.get("dagster_data_version"),
        "dagster_event": None,  # filled by attach_dagster_events
        "at": record.at.isoformat(),
        "event": record.event,
        "idempotency_key": p.get("idempotency_key"),
        "status": p.get("status"),
        "value": p.get("value"),
        "breach_level": p.get("breach_level"),
        "source": p.get("source"),
        "run_id": record.run_id,
        "job_name": p.get("job_name"),
        "dagster_run_url": p.get("dagster_run_url"),
        "instance_id": p.get("instance_id"),
        "input_data_versions": p.get("input_data_versions"),
        # hot path: the entry sealed this digest of its versions (stored once, by digest); a
        # digest whose row is gone shows here, and ``audit verify`` names the entry
        "lineage_digest": p.get("lineage_digest"),
        "lineage_missing": bool(p.get("lineage_digest")) and not p.get("input_data_versions"),
        "config_version": p.get("config_version") or p.get("limit_config_version"),
        "code_version": p.get("code_version"),
    }


def trace(storage: Storage, key: str, *, with_documents: bool = True) -> list[EpisodeTrace]:
    """Every alert episode the key names, with its notifications and lineage (the limit
    configuration documents only with ``with_documents``)."""
    episodes: list[EpisodeTrace] = []
    for correlation_id, fingerprint in _episode_keys(storage, key):
        rows = [r for r in storage.outbox.rows(fingerprint=fingerprint)
                if r.correlation_id == correlation_id]
        records = [r for r in storage.audit.by_correlation(correlation_id)
                   if r.event.startswith("alert.")]
        detections = [_detection(r) for r in records]
        versions = {str(d["config_version"]) for d in detections if d.get("config_version")}
        config_versions: dict[str, dict[str, Any] | None] = {}
        for version in sorted(versions):
            known = storage.config_versions.get(version)
            config_versions[version] = None if known is None else {
                "source": known.source, "applied_at": known.applied_at.isoformat(),
                "audit_hash": known.audit_hash,
                **({"document": known.document} if with_documents else {})}
        first = records[0].payload if records else {}
        episodes.append(EpisodeTrace(
            correlation_id=correlation_id, fingerprint=fingerprint,
            limit_id=str(first.get("limit_id", "")), scope=str(first.get("scope", "")),
            notifications=[_notification(r) for r in rows], detections=detections,
            config_versions=config_versions))
    return episodes


def as_dict(episode: EpisodeTrace) -> dict[str, Any]:
    data = asdict(episode)
    for note, raw in zip(data["notifications"], episode.notifications, strict=True):
        note["detect_latency_s"] = raw.detect_latency_s
        note["notify_latency_s"] = raw.notify_latency_s
    return data


def attach_dagster_events(episodes: list[EpisodeTrace], instance: Any, ui_url: str, *,
                          search: int = 10_000) -> None:
    """For each hot-path detection, the ``live_limit_status`` event it reported (tagged with
    its evaluation id; searched among the newest ``search`` events): its storage id, time, UI
    link and the input data versions it recorded."""
    from risk_monitor.dagster_catalog import find_event

    for episode in episodes:
        for detection in episode.detections:
            evaluation_id = detection.get("evaluation_id")
            if detection.get("run_id") or not evaluation_id:
                continue
            event = find_event(instance, str(evaluation_id), limit=search, ui_url=ui_url)
            if event is None:
                continue
            detection["dagster_event"] = {
                "storage_id": event.storage_id, "timestamp": event.timestamp,
                "data_version": event.data_version, "url": event.url,
                "metadata": dict(event.metadata)}
            detection["dagster_event_url"] = event.url
