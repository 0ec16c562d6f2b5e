"""Alerts: per-sink delivery state (the Alertmanager sink syncs each alert series' latest
outbox row, retried and kept alive from this table).

Revision ID: al7m_sink_deliveries
Revises: c3d9_silences_store
Create Date: 2026-12-03

Written out in full (not imported from ``schema.py``): a migration is a frozen record.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "al7m_sink_deliveries"
down_revision: str | None = "c3d9_silences_store"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sink_deliveries",
        sa.Column("sink", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("outbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=True),
        sa.Column("pushed_labels", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_push_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("sink", "fingerprint", name="pk_sink_deliveries"),
    )


def downgrade() -> None:
    op.drop_table("sink_deliveries")
