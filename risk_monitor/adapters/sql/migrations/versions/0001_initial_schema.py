"""Initial schema: alerts, outbox, risk state, compliance, equity, limit versions, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written out in full (not imported from ``schema.py``): a migration is a frozen record of what
the database looked like at that revision, whatever the code says later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                     nullable=False)


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                     autoincrement=True, nullable=False)


def upgrade() -> None:
    op.create_table(
        "alert_states",
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("limit_id", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        _ts("started_at", nullable=True),
        _ts("last_evaluated_at"),
        _ts("last_notified_at", nullable=True),
        sa.Column("last_notified_status", sa.String(16), nullable=True),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("utilisation", sa.Float(), nullable=True),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("message_ref", sa.String(200), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_alert_states"),
    )
    op.create_table(
        "outbox",
        _id(),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("alert_status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("limit_id", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        _json("payload"),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _ts("next_attempt_at"),
        _ts("lease_until", nullable=True),
        sa.Column("claim_token", sa.String(36), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_code", sa.String(16), nullable=True),
        sa.Column("delivery_ref", sa.String(200), nullable=True),
        _ts("created_at"),
        _ts("detected_at"),
        _ts("source_event_time", nullable=True),
        _ts("notified_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')",
                           name="ck_outbox_status_known"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("fingerprint", "sequence", name="uq_outbox_fingerprint_sequence"),
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
    )
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])
    op.create_table(
        "limit_status_latest",
        sa.Column("limit_id", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("limit_kind", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("warn_level", sa.Float(), nullable=True),
        sa.Column("breach_level", sa.Float(), nullable=False),
        sa.Column("utilisation", sa.Float(), nullable=True),
        _ts("as_of"),
        sa.Column("config_version", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        _ts("source_event_time", nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("limit_id", "scope", name="pk_limit_status_latest"),
    )
    op.create_table(
        "risk_metrics_latest",
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("labels_key", sa.String(500), nullable=False),
        _json("labels"),
        sa.Column("value", sa.Float(), nullable=True),
        _ts("as_of"),
        sa.PrimaryKeyConstraint("name", "labels_key", name="pk_risk_metrics_latest"),
    )
    op.create_table(
        "source_status_latest",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("venue", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        _ts("as_of"),
        _ts("last_ok_at", nullable=True),
        sa.Column("rows", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_code", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_source_status_latest"),
    )
    op.create_table(
        "compliance_intervals",
        _id(),
        sa.Column("limit_id", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("since"),
        _ts("until", nullable=True),
        _ts("last_seen_at"),
        sa.Column("worst_utilisation", sa.Float(), nullable=True),
        sa.Column("config_version", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compliance_intervals"),
    )
    op.create_index("ix_compliance_intervals_limit_id_scope_since", "compliance_intervals",
                    ["limit_id", "scope", "since"])
    op.create_index("uq_compliance_intervals_open", "compliance_intervals",
                    ["limit_id", "scope"], unique=True,
                    postgresql_where=sa.text("until IS NULL"),
                    sqlite_where=sa.text("until IS NULL"))
    op.create_table(
        "equity_history",
        sa.Column("scope", sa.String(300), nullable=False),
        _ts("at"),
        sa.Column("equity", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "at", name="pk_equity_history"),
    )
    op.create_table(
        "limit_config_versions",
        sa.Column("version", sa.String(64), nullable=False),
        _ts("applied_at"),
        sa.Column("source", sa.String(200), nullable=False),
        _json("document"),
        sa.PrimaryKeyConstraint("version", name="pk_limit_config_versions"),
    )
    op.create_table(
        "audit_log",
        _id(),
        _ts("at"),
        sa.Column("event", sa.String(100), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        _json("payload"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_correlation_id", "audit_log", ["correlation_id"])
    op.create_index("ix_audit_log_run_id", "audit_log", ["run_id"])


def downgrade() -> None:
    for table in ("audit_log", "limit_config_versions", "equity_history",
                  "compliance_intervals", "source_status_latest", "risk_metrics_latest",
                  "limit_status_latest", "outbox", "alert_states"):
        op.drop_table(table)
