"""Values of Dagster asset outputs, kept in the risk store's database (PostgreSQL or SQLite).

Dagster hands each step's output to an IO manager and the next step (in the same run or in a
later run, in another process, pod or Celery worker) loads it back. Keeping those values in the
database every run already reaches means no run ever reads another process's local disk.

The table is Dagster's intermediate storage, not part of the risk schema: like Dagster's own
storages it creates itself (once, under an advisory lock) instead of riding the risk migrations.
Rows are keyed by (asset, run): a run loads exactly the value the materialisation it names
produced, and only the newest ``keep`` values per asset are kept.

Values are pickled. The database is already the trust root of the monitor (alerts, audit
chain, limit versions); whoever can write this table can write those too. Never point it at a
database shared with less trusted writers.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from risk_monitor.adapters.sql.engine import dialect_insert, lock_names, read_only, write_tx

TABLE_NAME = "dagster_asset_values"
_metadata = sa.MetaData()
asset_values = sa.Table(
    TABLE_NAME,
    _metadata,
    sa.Column("asset_key", sa.String(512), primary_key=True),
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)

_ready: set[str] = set()
_ready_lock = threading.Lock()
SOURCE = "asset_values"


@dataclass(frozen=True)
class StoredValue:
    """One stored output: which run wrote it, when, and its size."""

    asset_key: str
    run_id: str
    stored_at: datetime
    size_bytes: int


class AssetValueStore:
    """Put and get pickled asset values by (asset key, run id) on one engine."""

    def __init__(self, engine: Engine, *, keep: int = 20) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.engine = engine
        self.keep = keep

    def ensure_table(self) -> None:
        """Create the table once per database and process (idempotent, safe in parallel)."""
        url = self.engine.url.render_as_string(hide_password=True)
        with _ready_lock:
            if url in _ready:
                return
            with write_tx(self.engine, source=SOURCE) as conn:
                lock_names(conn, ["risk_monitor.asset_values.ddl"])
                asset_values.create(conn, checkfirst=True)
            _ready.add(url)

    def put(self, asset_key: str, run_id: str, value: object) -> StoredValue:
        """Store ``value`` for (asset, run), replacing a retried step's earlier attempt, and
        drop all but the newest ``keep`` values of the asset."""
        self.ensure_table()
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        stored = StoredValue(asset_key, run_id, datetime.now(UTC), len(payload))
        row = {"asset_key": asset_key, "run_id": run_id, "stored_at": stored.stored_at,
               "size_bytes": stored.size_bytes, "payload": payload}
        insert = dialect_insert(self.engine, asset_values).values(**row)
        upsert = insert.on_conflict_do_update(
            index_elements=["asset_key", "run_id"],
            set_={"stored_at": insert.excluded.stored_at,
                  "size_bytes": insert.excluded.size_bytes,
                  "payload": insert.excluded.payload})
        newest = (sa.select(asset_values.c.run_id)
                  .where(asset_values.c.asset_key == asset_key)
                  .order_by(asset_values.c.stored_at.desc())
                  .limit(self.keep))
        with write_tx(self.engine, source=SOURCE) as conn:
            conn.execute(upsert)
            conn.execute(sa.delete(asset_values).where(
                asset_values.c.asset_key == asset_key,
                asset_values.c.run_id.not_in(newest.scalar_subquery())))
        return stored

    def get(self, asset_key: str, run_id: str) -> tuple[object] | None:
        """``(value,)`` as (asset, run) stored it, or None when nothing is (never a default)."""
        self.ensure_table()
        query = sa.select(asset_values.c.payload).where(
            asset_values.c.asset_key == asset_key, asset_values.c.run_id == run_id)
        with read_only(self.engine, source=SOURCE) as conn:
            payload = conn.execute(query).scalar_one_or_none()
        return None if payload is None else (pickle.loads(payload),)  # noqa: S301 (module doc)
