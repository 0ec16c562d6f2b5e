"""Alerts: the fallback sink's reference on outbox rows; when a notified episode began to clear.

Revision ID: a1e7_alerts_ack_silence
Revises: 0001
Create Date: 2026-12-02

Written out in full (not imported from ``schema.py``): a migration is a frozen record.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a1e7_alerts_ack_silence"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("fallback_ref", sa.String(200), nullable=True))
    with op.batch_alter_table("alert_states") as batch:
        batch.add_column(sa.Column("clearing_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_states") as batch:
        batch.drop_column("clearing_since")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("fallback_ref")
