"""The audit entries each covered write adds, in the writer's own transaction.

One function per kind of change, called where the change is committed (the hook sites are
listed in docs/audit.md): the alert transaction (notifications + changed alert states), the
compliance timeline and applied configuration versions. Each writes its entries through
``audit_log.seal_rows``, so the row and the entry sealing it commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from risk_monitor.adapters.sql import audit_lineage, codec
from risk_monitor.adapters.sql.audit_log import Seal, seal_rows
from risk_monitor.domain.model import AlertState, Notification
from risk_monitor.platform.code_version import code_version

#: alert-state fields whose change is sealed (the audited columns of ``alert_states``)
_STATE_FIELDS = ("limit_id", "scope", "status", "severity", "started_at", "episode",
                 "sequence", "correlation_id")
#: what the entry of a compliance interval says
_INTERVAL_FIELDS = ("limit_id", "scope", "status", "since", "until", "config_version")


def notification_payload(note: Notification, context: Mapping[str, Any]) -> dict[str, Any]:
    """What the audit entry of a notification says: the alert, and the data behind it. A
    context whose versions are stored by digest (hot path) seals the digest, not the versions."""
    if context.get(audit_lineage.DIGEST_KEY):
        context = {k: v for k, v in context.items() if k != audit_lineage.VERSIONS_KEY}
    return {
        "idempotency_key": note.idempotency_key,
        "fingerprint": note.fingerprint,
        "limit_id": note.limit_id,
        "limit_kind": note.limit_kind,
        "scope": note.scope,
        "status": note.status.value,
        "value": note.value,
        "breach_level": note.breach_level,
        "utilisation": note.utilisation,
        "config_version": note.config_version,
        "source_event_time": note.source_event_time.isoformat()
        if note.source_event_time else None,
        **dict(context),
        "code_version": code_version(),  # the process that wrote it, whatever the context says
    }


def changed_states(before: Mapping[str, AlertState],
                   after: Sequence[AlertState]) -> list[str]:
    """Fingerprints whose audited fields differ from the state read under the lock."""
    changed: list[str] = []
    for state in after:
        old = before.get(state.fingerprint)
        if old is None or any(getattr(old, f) != getattr(state, f) for f in _STATE_FIELDS):
            changed.append(state.fingerprint)
    return changed


def input_versions_row(conn: Connection, *, notifications: Sequence[Notification],
                       context: Mapping[str, Any], at: datetime
                       ) -> audit_lineage.PendingRow | None:
    """The row storing the evaluation's input versions under the digest the alert entries of
    this transaction seal (``audit_lineage.py``), for ``seal_batch`` to write with them;
    nothing when the context carries them inline (Dagster path) or nothing is notified."""
    digest = context.get(audit_lineage.DIGEST_KEY)
    versions = getattr(digest, "versions", None) or (
        context.get(audit_lineage.VERSIONS_KEY) if digest else None)
    if notifications and digest and versions is not None:
        return audit_lineage.pending(conn, digest, versions, at=at)
    return None


def alert_seals(*, before: Mapping[str, AlertState], states: Sequence[AlertState],
                enqueued: Sequence[Mapping[str, Any]], notifications: Sequence[Notification],
                context: Mapping[str, Any]) -> list[Seal]:
    """The seals of an alert transaction from what it wrote (no read-back): one per outbox
    row it inserted (``enqueued``, duplicates excluded) and one per alert state whose audited
    fields changed."""
    run_id = str(context["run_id"]) if context.get("run_id") else None
    by_key = {n.idempotency_key: n for n in notifications}
    seals = [Seal("outbox", row, f"alert.{row['kind']}", row["correlation_id"],
                  notification_payload(by_key[row["idempotency_key"]], context), run_id)
             for row in sorted(enqueued, key=lambda r: str(r["idempotency_key"]))]
    origin = {k: context[k] for k in ("source", "run_id", "instance_id", "job_name")
              if context.get(k)}
    by_fingerprint = {s.fingerprint: s for s in states}
    for fingerprint in sorted(changed_states(before, list(by_fingerprint.values()))):
        row = codec.state_values(by_fingerprint[fingerprint])
        seals.append(Seal("alert_states", row, "alert_state.changed", row["correlation_id"],
                          {**{k: row[k] for k in ("fingerprint", *_STATE_FIELDS)}, **origin},
                          run_id))
    return seals


def compliance_seal(row: Mapping[str, Any]) -> Seal:
    """The seal of one compliance interval opened, closed or re-versioned (as written)."""
    return Seal("compliance_intervals", row, "compliance.interval",
                payload={k: row[k] for k in _INTERVAL_FIELDS})


def seal_config_version(conn: Connection, version: str, *, at: datetime) -> int:
    """Hook of the configuration store: a limit configuration version applied first."""
    return seal_rows(
        conn, "limit_config_versions", [version], at=at, event="config.applied",
        payload=lambda row: {"config_version": row["version"], "source": row["source"],
                             "applied_at": codec.to_jsonable(row["applied_at"])})
