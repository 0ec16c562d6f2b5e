"""Audit hash chain: chain columns on audit_log, seals on covered rows, append-only audit_log.

Revision ID: b2c4_audit_hash_chain
Revises: 0001
Create Date: 2026-12-02

* ``audit_log`` gets ``prev_hash``, ``entry_hash`` (unique), ``subject`` and ``row_digest``;
  ``alert_states``, ``outbox``, ``compliance_intervals`` and ``limit_config_versions`` get
  ``audit_hash``, the hash of the entry that sealed the row (docs/audit.md).
* ``audit_log`` refuses UPDATE and DELETE through a trigger on both backends. On PostgreSQL the
  migration also creates the group role ``risk_monitor_app`` (if it may create roles) with
  SELECT/INSERT on audit_log and no UPDATE/DELETE/TRUNCATE, and revokes those from PUBLIC; see
  docs/storage-and-alerting.md "Database roles". Entries written before this revision keep NULL
  hashes: ``audit verify`` accepts them only as a prefix of the chain.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b2c4_audit_hash_chain"
down_revision: str | None = "a1e7_alerts_ack_silence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEALED_TABLES = ("alert_states", "outbox", "compliance_intervals", "limit_config_versions")

PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION risk_monitor_audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""
PG_TRIGGER = """
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION risk_monitor_audit_log_append_only();
"""
# roles are cluster-wide: tolerate a concurrent creator and a migrating role without CREATEROLE
PG_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'risk_monitor_app') THEN
        BEGIN
            CREATE ROLE risk_monitor_app NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation OR insufficient_privilege THEN
            RAISE NOTICE 'role risk_monitor_app not created here';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'risk_monitor_app') THEN
        EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON alert_states, outbox, '
             || 'limit_status_latest, risk_metrics_latest, source_status_latest, '
             || 'compliance_intervals, equity_history, limit_config_versions '
             || 'TO risk_monitor_app';
        EXECUTE 'GRANT SELECT, INSERT ON audit_log TO risk_monitor_app';
        EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM risk_monitor_app';
        EXECUTE 'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA '
             || quote_ident(current_schema()) || ' TO risk_monitor_app';
    END IF;
END
$$;
"""
SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only (UPDATE refused)'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only (DELETE refused)'); END",
)


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("audit_log", sa.Column("entry_hash", sa.String(64), nullable=True))
    op.add_column("audit_log", sa.Column("subject", sa.String(400), nullable=True))
    op.add_column("audit_log", sa.Column("row_digest", sa.String(64), nullable=True))
    op.create_index("ix_audit_log_entry_hash", "audit_log", ["entry_hash"], unique=True)
    op.create_index("ix_audit_log_subject", "audit_log", ["subject"])
    for table in SEALED_TABLES:
        op.add_column(table, sa.Column("audit_hash", sa.String(64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_APPEND_ONLY)
        op.execute(PG_TRIGGER)
        op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC")
        op.execute(PG_ROLE)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS risk_monitor_audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    for table in SEALED_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("audit_hash")
    op.drop_index("ix_audit_log_subject", "audit_log")
    op.drop_index("ix_audit_log_entry_hash", "audit_log")
    with op.batch_alter_table("audit_log") as batch:
        for column in ("row_digest", "subject", "entry_hash", "prev_hash"):
            batch.drop_column(column)
