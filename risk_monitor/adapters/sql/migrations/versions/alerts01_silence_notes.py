"""Alerts: a silence is said once in the thread of each firing alert it holds back
(``alert_silence_notes``); the application role may use the alert-control tables (the
migrations that added silences, acknowledgements and the Alertmanager sink's deliveries
granted nothing, so a service logged in as ``risk_monitor_service`` could not silence).

Revision ID: alerts01_silence_notes
Revises: lineage01_evaluation_lineage
Create Date: 2026-12-04

Written out in full (not imported from ``schema.py``): a migration is a frozen record.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "alerts01_silence_notes"
down_revision: str | None = "lineage01_evaluation_lineage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


#: the alerting tables the service and Dagster read and write (not append-only)
PG_ROLE = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'risk_monitor_app') THEN
        EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON alert_silences, '
             || 'alert_acknowledgements, alert_silence_notes, sink_deliveries '
             || 'TO risk_monitor_app';
        EXECUTE 'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA '
             || quote_ident(current_schema()) || ' TO risk_monitor_app';
    END IF;
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "alert_silence_notes",
        sa.Column("silence_id", sa.String(36), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("noted_ref", sa.String(200), nullable=False),
        sa.Column("noted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("silence_id", "fingerprint", "episode",
                                name="pk_alert_silence_notes"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_ROLE)


def downgrade() -> None:
    op.drop_table("alert_silence_notes")
