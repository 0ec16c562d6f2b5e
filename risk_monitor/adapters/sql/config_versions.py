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
        """Record that a version was applied (again) from ``source``; True when it was new.

        A known version keeps its document; its ``applied_at`` and ``source`` move to this
        application, so the history's newest entry is what was applied last (a service
        document identical to the file's becomes a service document).
        """
        with write_tx(self.engine, source=SOURCE) as conn:
            known = conn.execute(sa.select(limit_config_versions.c.version).where(
                limit_config_versions.c.version == version)).first() is not None
            insert = dialect_insert(conn, limit_config_versions).values(
                version=version, applied_at=applied_at, source=source,
                document=codec.safe_document(dict(document)),
            )
            conn.execute(insert.on_conflict_do_update(
                index_elements=["version"],
                set_={"applied_at": insert.excluded.applied_at, "source": insert.excluded.source}))
            # every application is audited: the row's applied_at/source moved (issue 11)
            seal_config_version(conn, version, at=applied_at)
            return not known

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
