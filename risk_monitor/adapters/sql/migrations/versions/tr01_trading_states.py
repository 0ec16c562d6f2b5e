"""Trading: the operator-set trading state per scope (global or one venue).

Revision ID: tr01_trading_states
Revises: al7m_sink_deliveries
Create Date: 2026-12-03

Written out in full (not imported from ``schema.py``): a migration is a frozen record.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "tr01_trading_states"
down_revision: str | None = "al7m_sink_deliveries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trading_states",
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", name="pk_trading_states"),
        sa.CheckConstraint("state IN ('ACTIVE', 'REDUCING', 'HALTED')",
                           name="ck_trading_states_state_known"),
    )


def downgrade() -> None:
    op.drop_table("trading_states")
