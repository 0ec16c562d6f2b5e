"""The operator-set trading state per scope, on SQL; each change audited in its transaction.

Automatic transitions (derived from limit results by ``domain/trading_state.py``) are not
stored here: they follow the data. The service audits them as they happen (``record_automatic``)
so a compliance reviewer sees every change of the state in force, whoever made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.audit_log import SqlAuditLog
from risk_monitor.adapters.sql.engine import dialect_insert, read_only, write_tx
from risk_monitor.adapters.sql.schema import trading_states
from risk_monitor.domain.trading_state import (
    ManualState,
    TradingState,
    TradingVerdict,
    validate_scope,
)
from risk_monitor.platform.errors import TradingControlError

SOURCE = "trading_states"
MANUAL_EVENT = "trading_state.set"
AUTOMATIC_EVENT = "trading_state.changed"


class SqlTradingStates:
    """Set and read manual trading states; audit changes of the state in force."""

    def __init__(self, engine: Engine, *, clock: codec.Clock = codec.utc_now) -> None:
        self.engine = engine
        self.clock = clock
        self.audit = SqlAuditLog(engine)

    def set(self, scope: str, state: TradingState | str, *, by: str, reason: str = ""
            ) -> ManualState:
        """Set ``scope``'s manual state (ACTIVE clears it); refused without an actor."""
        try:
            scope = validate_scope(scope)
            wanted = TradingState(str(state).upper())
        except ValueError as exc:
            raise TradingControlError(str(exc), source=SOURCE) from exc
        if not by.strip():
            raise TradingControlError("no caller identity for a trading-state change",
                                      source=SOURCE)
        now = self.clock()
        with write_tx(self.engine, source=SOURCE) as conn:
            row = conn.execute(sa.select(trading_states.c.state)
                               .where(trading_states.c.scope == scope)
                               .with_for_update()).first()
            before = TradingState(row.state) if row is not None else TradingState.ACTIVE
            values = {"state": wanted.value, "changed_by": by, "reason": reason,
                      "changed_at": now}
            conn.execute(dialect_insert(conn, trading_states).values(scope=scope, **values)
                         .on_conflict_do_update(index_elements=["scope"], set_=values))
            self.audit.record(MANUAL_EVENT, now, None, {
                "scope": scope, "from": before.value, "to": wanted.value, "actor": by,
                "reason": reason}, conn=conn)
        return ManualState(wanted, by, reason)

    def manual(self) -> dict[str, ManualState]:
        """Every scope whose manual state is not ACTIVE."""
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(trading_states)).all()
        return {r.scope: ManualState(TradingState(r.state), r.changed_by, r.reason)
                for r in rows if r.state != TradingState.ACTIVE.value}

    def rows(self) -> list[dict[str, Any]]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(trading_states).order_by(trading_states.c.scope))
            return [codec.to_jsonable(dict(r._mapping)) for r in rows]

    def record_automatic(self, changes: Mapping[str, tuple[TradingVerdict, TradingVerdict]],
                         *, at: datetime, instance_id: str) -> None:
        """Audit changes of the state in force (scope -> (before, after)) in one transaction."""
        if not changes:
            return
        with write_tx(self.engine, source=SOURCE) as conn:
            for scope, (before, after) in sorted(changes.items()):
                self.audit.record(AUTOMATIC_EVENT, at, None, {
                    "scope": scope, "from": before.state.value, "to": after.state.value,
                    "origin": after.origin if after.origin != "none" else before.origin,
                    "set_by_scope": after.scope, "cause": after.cause or before.cause,
                    "instance_id": instance_id}, conn=conn)
