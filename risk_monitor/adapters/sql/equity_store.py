"""Equity over time per scope: the base of daily-loss and drawdown limits.

Start-of-day equity is the last observation at or before 00:00 UTC; when the monitor started
later that day, the first observation of the day stands in (and the caller can tell from
``at``). Peak equity is the maximum ever observed (drawdown from peak).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.sql.engine import dialect_insert, read_only, write_tx
from risk_monitor.adapters.sql.schema import equity_history
from risk_monitor.domain.figures import EquityPoint

SOURCE = "equity_store"


class EquityStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, points: Sequence[EquityPoint]) -> int:
        """Insert observations (a repeated (scope, at) keeps the latest value)."""
        for point in points:
            if not math.isfinite(point.equity):
                raise ValueError(f"equity of {point.scope} at {point.at} is not finite")
        if not points:
            return 0
        rows = [{"scope": p.scope, "at": p.at, "equity": p.equity} for p in points]
        with write_tx(self.engine, source=SOURCE) as conn:
            return int(conn.execute(_upsert(conn), rows).rowcount)  # each row in turn

    def start_of_day(self, scope: str, day: date) -> EquityPoint | None:
        """Equity at 00:00 UTC of ``day`` (see the module docstring)."""
        t = equity_history
        midnight = datetime.combine(day, time(0), tzinfo=UTC)
        before = self._one(sa.select(t).where(t.c.scope == scope, t.c.at <= midnight)
                           .order_by(t.c.at.desc()).limit(1))
        if before is not None:
            return before
        return self._one(sa.select(t).where(
            t.c.scope == scope, t.c.at > midnight, t.c.at < midnight + timedelta(days=1)
        ).order_by(t.c.at).limit(1))

    def peak(self, scope: str) -> EquityPoint | None:
        t = equity_history
        return self._one(sa.select(t).where(t.c.scope == scope)
                         .order_by(t.c.equity.desc(), t.c.at).limit(1))

    def _one(self, query: sa.Select[tuple[object, ...]]) -> EquityPoint | None:
        with read_only(self.engine, source=SOURCE) as conn:
            row = conn.execute(query).first()
        return None if row is None else EquityPoint(scope=row.scope, at=row.at, equity=row.equity)


def _upsert(conn: Connection) -> Any:
    """The upsert of an observation, built once per backend (the service's periodic write
    records one every few seconds: building it cost more CPU than running it)."""
    built = _UPSERTS.get(conn.dialect.name)
    if built is None:
        statement = dialect_insert(conn, equity_history)
        built = _UPSERTS[conn.dialect.name] = statement.on_conflict_do_update(
            index_elements=["scope", "at"], set_={"equity": statement.excluded.equity})
    return built


_UPSERTS: dict[str, Any] = {}
