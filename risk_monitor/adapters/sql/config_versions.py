"""Every limit configuration version ever applied, recorded once with its document.

An alert names the ``config_version`` it was evaluated under; this table turns that hash back
into the exact limits, so a reviewer can see what the thresholds were at the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.audit_hooks import seal_config_version
from risk_monitor.adapters.sql.engine import dialect_insert, read_only, write_tx
from risk_monitor.adapters.sql.schema import limit_config_versions

SOURCE = "config_versions"


@dataclass(frozen=True)
class ConfigVersion:
    version: str
    applied_at: datetime
    source: str
    document: dict[str, Any]
    audit_hash: str | None = None  # the audit entry that sealed it (audit_log.py)


class ConfigVersionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, version: str, document: Mapping[str, Any], *, source: str,
               applied_at: datetime) -> bool:
        """Record a version the first time it is applied; True when it was new."""
        with write_tx(self.engine, source=SOURCE) as conn:
            statement = dialect_insert(conn, limit_config_versions).values(
                version=version, applied_at=applied_at, source=source,
                document=codec.safe_document(dict(document)),
            ).on_conflict_do_nothing(index_elements=["version"])
            if not conn.execute(statement).rowcount:
                return False
            seal_config_version(conn, version, at=applied_at)  # audit hook (issue 11)
            return True

    def get(self, version: str) -> ConfigVersion | None:
        t = limit_config_versions
        with read_only(self.engine, source=SOURCE) as conn:
            row = conn.execute(sa.select(t).where(t.c.version == version)).first()
        return None if row is None else ConfigVersion(**dict(row._mapping))

    def history(self, limit: int = 100) -> list[ConfigVersion]:
        """Most recently applied first."""
        t = limit_config_versions
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.applied_at.desc()).limit(limit))
            return [ConfigVersion(**dict(r._mapping)) for r in rows]
