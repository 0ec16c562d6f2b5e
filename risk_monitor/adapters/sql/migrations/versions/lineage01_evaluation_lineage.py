"""Lineage: the input data versions of hot-path evaluations, stored once per evaluation.

Revision ID: lineage01_evaluation_lineage
Revises: tr01_trading_states
Create Date: 2026-12-03

``evaluation_lineage`` holds each evaluation's input versions once, keyed by their digest; the
alert entries of the audit chain seal that digest, not the versions (a smaller sealed payload on
the hot path). Append-only like ``audit_log``: a trigger refuses UPDATE and DELETE on both
backends, and on PostgreSQL the application role may only SELECT and INSERT (docs/audit.md).
Written out in full (not imported from ``schema.py``): a migration is a frozen record.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "lineage01_evaluation_lineage"
down_revision: str | None = "tr01_trading_states"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_TRIGGER = """
CREATE TRIGGER evaluation_lineage_append_only BEFORE UPDATE OR DELETE ON evaluation_lineage
FOR EACH ROW EXECUTE FUNCTION risk_monitor_audit_log_append_only();
"""
PG_ROLE = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'risk_monitor_app') THEN
        EXECUTE 'GRANT SELECT, INSERT ON evaluation_lineage TO risk_monitor_app';
        EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE ON evaluation_lineage FROM risk_monitor_app';
    END IF;
END
$$;
"""
SQLITE_TRIGGERS = (
    "CREATE TRIGGER evaluation_lineage_no_update BEFORE UPDATE ON evaluation_lineage "
    "BEGIN SELECT RAISE(ABORT, 'evaluation_lineage is append-only (UPDATE refused)'); END",
    "CREATE TRIGGER evaluation_lineage_no_delete BEFORE DELETE ON evaluation_lineage "
    "BEGIN SELECT RAISE(ABORT, 'evaluation_lineage is append-only (DELETE refused)'); END",
)


def upgrade() -> None:
    op.create_table(
        "evaluation_lineage",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("versions", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_evaluation_lineage"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_TRIGGER)  # the function comes with b2c4_audit_hash_chain
        op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON evaluation_lineage FROM PUBLIC")
        op.execute(PG_ROLE)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS evaluation_lineage_append_only ON evaluation_lineage")
    op.drop_table("evaluation_lineage")
