"""Alerts: silences and acknowledgements stored; outbox rows can be ``suppressed`` (held back by
one, recorded with what held them).

Revision ID: c3d9_silences_store
Revises: a1e7_alerts_ack_silence
Create Date: 2026-12-02

Written out in full (not imported from ``schema.py``): a migration is a frozen record.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c3d9_silences_store"
down_revision: str | None = "b2c4_audit_hash_chain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = "status IN ('pending', 'sending', 'sent', 'failed')"
_NEW_STATUSES = "status IN ('pending', 'sending', 'sent', 'failed', 'suppressed')"


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alert_silences",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("matchers", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=False),
        _ts("starts_at"),
        _ts("ends_at"),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("expired_at", nullable=True),
        sa.Column("expired_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_silences"),
    )
    op.create_index("ix_alert_silences_ends_at", "alert_silences", ["ends_at"])
    op.create_table(
        "alert_acknowledgements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("acked_by", sa.String(200), nullable=False),
        _ts("acked_at"),
        sa.Column("comment", sa.Text(), nullable=False, server_default=""),
        sa.Column("noted_ref", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_acknowledgements"),
        sa.UniqueConstraint("fingerprint", "episode", "status",
                            name="uq_alert_acknowledgements_fingerprint_episode_status"),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("suppressed_by", sa.String(500), nullable=True))
        batch.drop_constraint("ck_outbox_status_known", type_="check")
        batch.create_check_constraint("ck_outbox_status_known", sa.text(_NEW_STATUSES))


def downgrade() -> None:
    op.execute("UPDATE outbox SET status = 'sent' WHERE status = 'suppressed'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("ck_outbox_status_known", type_="check")
        batch.create_check_constraint("ck_outbox_status_known", sa.text(_OLD_STATUSES))
        batch.drop_column("suppressed_by")
    op.drop_table("alert_acknowledgements")
    op.drop_index("ix_alert_silences_ends_at", table_name="alert_silences")
    op.drop_table("alert_silences")
