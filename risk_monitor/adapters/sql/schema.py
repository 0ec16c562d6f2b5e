"""Tables of Risk Monitor's own store (SQLAlchemy Core), shared by PostgreSQL and SQLite.

The Alembic scripts in ``migrations/versions`` create exactly these tables; a test compares the
migrated database with this metadata, so a change here without a migration fails CI. Our Alembic
version table has its own name because Dagster keeps its ``alembic_version`` in the same
PostgreSQL database when both share one.

Every timestamp is a timezone-aware UTC ``datetime`` in Python (:class:`UtcDateTime`): SQLite
has no time zones, so the type strips UTC on the way in and puts it back on the way out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

VERSION_TABLE = "risk_monitor_alembic_version"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends; a naive datetime is a bug and is refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: JSON documents: JSONB on PostgreSQL, JSON text on SQLite
Json: sa.types.TypeEngine[Any] = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: autoincrementing ids: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite
BigId: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# --- alerts ----------------------------------------------------------------------------------
alert_states = sa.Table(
    "alert_states",
    metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("limit_id", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(300), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("last_evaluated_at", UtcDateTime(), nullable=False),
    sa.Column("last_notified_at", UtcDateTime(), nullable=True),
    sa.Column("last_notified_status", sa.String(16), nullable=True),
    sa.Column("episode", sa.Integer(), nullable=False),
    sa.Column("sequence", sa.Integer(), nullable=False),
    sa.Column("value", sa.Float(), nullable=True),
    sa.Column("utilisation", sa.Float(), nullable=True),
    sa.Column("correlation_id", sa.String(64), nullable=True),
    sa.Column("clearing_since", UtcDateTime(), nullable=True),
    # Slack "channel:ts" of the first message of the current episode (thread root)
    sa.Column("message_ref", sa.String(200), nullable=True),
    # optimistic concurrency: bumped by every state write
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # entry_hash of the audit entry that sealed the audited columns (audit_log.py)
    sa.Column("audit_hash", sa.String(64), nullable=True),
)

#: "suppressed": held back by a silence or an acknowledgement (recorded, never sent)
OUTBOX_STATUSES = ("pending", "sending", "sent", "failed", "suppressed")

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("episode", sa.Integer(), nullable=False),
    sa.Column("sequence", sa.Integer(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("alert_status", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("limit_id", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(300), nullable=False),
    sa.Column("correlation_id", sa.String(64), nullable=False),
    sa.Column("payload", Json, nullable=False),
    # delivery state: pending -> sending (claimed, lease_until) -> sent | failed
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    sa.Column("lease_until", UtcDateTime(), nullable=True),
    sa.Column("claim_token", sa.String(36), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),  # redacted
    sa.Column("last_error_code", sa.String(16), nullable=True),
    sa.Column("delivery_ref", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("detected_at", UtcDateTime(), nullable=False),
    sa.Column("source_event_time", UtcDateTime(), nullable=True),
    sa.Column("notified_at", UtcDateTime(), nullable=True),
    sa.Column("finished_at", UtcDateTime(), nullable=True),  # sent or failed for good
    # where the fallback sink wrote it while the notifier refused our configuration
    sa.Column("fallback_ref", sa.String(200), nullable=True),
    sa.Column("audit_hash", sa.String(64), nullable=True),  # sealing audit entry (audit_log.py)
    # what held a suppressed row back: "silence:<id>,..." or "ack:<who>"
    sa.Column("suppressed_by", sa.String(500), nullable=True),
    sa.CheckConstraint(f"status IN {OUTBOX_STATUSES}", name="status_known"),
    sa.UniqueConstraint("fingerprint", "sequence"),
    sa.Index(None, "status", "next_attempt_at"),
)

# silences (Alertmanager matchers) and per-episode acknowledgements; never deleted (audit)
alert_silences = sa.Table(
    "alert_silences",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("matchers", Json, nullable=False),  # [{"name", "op", "value"}]
    sa.Column("starts_at", UtcDateTime(), nullable=False),
    sa.Column("ends_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expired_at", UtcDateTime(), nullable=True),  # unsilenced early
    sa.Column("expired_by", sa.String(200), nullable=True),
    sa.Index(None, "ends_at"),
)

alert_acknowledgements = sa.Table(
    "alert_acknowledgements",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("episode", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("acked_by", sa.String(200), nullable=False),
    sa.Column("acked_at", UtcDateTime(), nullable=False),
    sa.Column("comment", sa.Text(), nullable=False, server_default=""),
    # the threaded reply saying so under the alert's Slack message (NULL: not posted yet)
    sa.Column("noted_ref", sa.String(200), nullable=True),
    sa.UniqueConstraint("fingerprint", "episode", "status"),
)

#: a silence said in an alert's thread: once per (silence, alert series, episode)
alert_silence_notes = sa.Table(
    "alert_silence_notes",
    metadata,
    sa.Column("silence_id", sa.String(36), primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("episode", sa.Integer(), primary_key=True),
    sa.Column("noted_ref", sa.String(200), nullable=False),
    sa.Column("noted_at", UtcDateTime(), nullable=False),
)

# --- risk state ------------------------------------------------------------------------------
limit_status_latest = sa.Table(
    "limit_status_latest",
    metadata,
    sa.Column("limit_id", sa.String(200), primary_key=True),
    sa.Column("scope", sa.String(300), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("limit_kind", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("value", sa.Float(), nullable=True),
    sa.Column("warn_level", sa.Float(), nullable=True),
    sa.Column("breach_level", sa.Float(), nullable=False),
    sa.Column("utilisation", sa.Float(), nullable=True),
    sa.Column("as_of", UtcDateTime(), nullable=False),
    sa.Column("config_version", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False, server_default=""),
    sa.Column("source_event_time", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

risk_metrics_latest = sa.Table(
    "risk_metrics_latest",
    metadata,
    sa.Column("name", sa.String(120), primary_key=True),
    sa.Column("labels_key", sa.String(500), primary_key=True),  # canonical JSON of labels
    sa.Column("labels", Json, nullable=False),
    sa.Column("value", sa.Float(), nullable=True),  # NULL = unknown (NaN in Prometheus)
    sa.Column("as_of", UtcDateTime(), nullable=False),
)

source_status_latest = sa.Table(
    "source_status_latest",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),  # SourceStatus.key
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("venue", sa.String(64), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("ok", sa.Boolean(), nullable=False),
    sa.Column("as_of", UtcDateTime(), nullable=False),  # last attempt
    sa.Column("last_ok_at", UtcDateTime(), nullable=True),  # last success (data age)
    sa.Column("rows", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("error_code", sa.String(16), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
)

# --- compliance, equity, configuration, audit ------------------------------------------------
compliance_intervals = sa.Table(
    "compliance_intervals",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("limit_id", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(300), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("since", UtcDateTime(), nullable=False),
    sa.Column("until", UtcDateTime(), nullable=True),  # NULL = still open
    sa.Column("last_seen_at", UtcDateTime(), nullable=False),
    sa.Column("worst_utilisation", sa.Float(), nullable=True),
    sa.Column("config_version", sa.String(64), nullable=False),
    sa.Column("audit_hash", sa.String(64), nullable=True),  # sealing audit entry (audit_log.py)
    sa.Index(None, "limit_id", "scope", "since"),
    # at most one open interval per (limit, scope)
    sa.Index(
        "uq_compliance_intervals_open",
        "limit_id",
        "scope",
        unique=True,
        postgresql_where=sa.text("until IS NULL"),
        sqlite_where=sa.text("until IS NULL"),
    ),
)

equity_history = sa.Table(
    "equity_history",
    metadata,
    sa.Column("scope", sa.String(300), primary_key=True),
    sa.Column("at", UtcDateTime(), primary_key=True),
    sa.Column("equity", sa.Float(), nullable=False),
)

limit_config_versions = sa.Table(
    "limit_config_versions",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("applied_at", UtcDateTime(), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("document", Json, nullable=False),
    sa.Column("audit_hash", sa.String(64), nullable=True),  # sealing audit entry (audit_log.py)
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("event", sa.String(100), nullable=False),
    sa.Column("correlation_id", sa.String(64), nullable=True, index=True),
    sa.Column("run_id", sa.String(64), nullable=True, index=True),
    sa.Column("payload", Json, nullable=False),
    # hash chain (domain/audit_chain.py): NULL only on entries written before the chain existed
    sa.Column("prev_hash", sa.String(64), nullable=True),
    sa.Column("entry_hash", sa.String(64), nullable=True),
    # the covered row this entry seals ("table:key") and the digest of its audited columns
    sa.Column("subject", sa.String(400), nullable=True, index=True),
    sa.Column("row_digest", sa.String(64), nullable=True),
    sa.Index(None, "at"),
    sa.Index(None, "entry_hash", unique=True),
)


#: the input data versions of one hot-path evaluation, stored once and content-addressed: the
#: key is the digest of the canonical versions (domain/audit_chain.py), which the alert entries
#: name in their sealed payload (``lineage_digest``); append-only like audit_log (audit_lineage.py)
evaluation_lineage = sa.Table(
    "evaluation_lineage",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
    sa.Column("versions", Json, nullable=False),
)

#: what each extra sink (Alertmanager) last received per alert series: the outbox row it was
#: synced to, the labels it was pushed under, and when to push again (keep-alive / retry)
sink_deliveries = sa.Table(
    "sink_deliveries",
    metadata,
    sa.Column("sink", sa.String(32), primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("outbox_id", BigId, nullable=True),  # the last state delivered (None: none yet)
    sa.Column("pushed_labels", Json, nullable=True),
    sa.Column("delivered_at", UtcDateTime(), nullable=True),
    sa.Column("next_push_at", UtcDateTime(), nullable=True),  # None: resolved, nothing to keep
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=True),
)


trading_states = sa.Table(
    "trading_states",
    metadata,
    # the operator-set (manual) trading state per scope: "global" or "venue:<id>"
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # ACTIVE | REDUCING | HALTED
    sa.Column("changed_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("changed_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint("state IN ('ACTIVE', 'REDUCING', 'HALTED')", name="state_known"),
)
