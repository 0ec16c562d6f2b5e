"""Append-only audit trail: the ``AuditLog`` port on SQL.

Each alert, evaluation and configuration change writes one row with the Dagster run id, the
input data versions, the limit configuration version and the code version in ``payload``;
``correlation_id`` ties them to the alert's Slack message and log lines. Rows are never updated
or deleted by Risk Monitor. Payloads are redacted before they are stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from risk_monitor import __version__
from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.engine import read_only, write_tx
from risk_monitor.adapters.sql.schema import audit_log

SOURCE = "audit_log"


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    event: str
    correlation_id: str | None
    run_id: str | None
    payload: dict[str, Any]


class SqlAuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, event: str, at: datetime, correlation_id: str | None,
               payload: Mapping[str, Any], *, run_id: str | None = None,
               conn: Connection | None = None) -> None:
        """Append one record; ``run_id`` defaults to ``payload["run_id"]``."""
        body = codec.safe_document(dict(payload))
        body.setdefault("code_version", __version__)
        run = run_id or (str(payload["run_id"]) if payload.get("run_id") else None)
        statement = audit_log.insert().values(
            at=at, event=event, correlation_id=correlation_id, run_id=run, payload=body)
        if conn is not None:
            conn.execute(statement)
            return
        with write_tx(self.engine, source=SOURCE) as own:
            own.execute(statement)

    def by_correlation(self, correlation_id: str) -> list[AuditRecord]:
        return self._query(audit_log.c.correlation_id == correlation_id)

    def by_run(self, run_id: str) -> list[AuditRecord]:
        return self._query(audit_log.c.run_id == run_id)

    def recent(self, limit: int = 100, event: str | None = None) -> list[AuditRecord]:
        """Newest first."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if event is not None:
            query = query.where(audit_log.c.event == event)
        with read_only(self.engine, source=SOURCE) as conn:
            return [AuditRecord(**dict(r._mapping)) for r in conn.execute(query)]

    def _query(self, where: sa.ColumnElement[bool]) -> list[AuditRecord]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(audit_log).where(where).order_by(audit_log.c.id))
            return [AuditRecord(**dict(r._mapping)) for r in rows]
