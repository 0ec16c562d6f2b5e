"""Engine factory: one code path for PostgreSQL (CI, production) and SQLite (embedded demo).

PostgreSQL goes through psycopg2 (``postgresql+psycopg2://``): SQLAlchemy 2.1 reads a bare
``postgresql://`` as psycopg 3, which we do not install. SQLite runs in WAL mode with a busy
timeout, and SQLAlchemy (not the sqlite3 module) emits ``BEGIN``: write transactions start with
``BEGIN IMMEDIATE`` so two writers queue on the database lock instead of failing when a read
transaction tries to upgrade to a write one (SQLite answers that with SQLITE_BUSY at once, busy
timeout or not). Read-only work asks for a plain deferred ``BEGIN`` with :func:`read_only`.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from risk_monitor.adapters.errors import map_exception
from risk_monitor.platform.errors import ConfigError, RiskMonitorError

#: execution option asking SQLite for a deferred (read) transaction
READ_ONLY_OPTION = "risk_monitor_read_only"
#: namespace of our PostgreSQL advisory locks (first int of the two-int form)
ADVISORY_NAMESPACE = 0x524D  # "RM"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str | URL) -> URL:
    """Pin the psycopg2 driver for PostgreSQL URLs; reject drivers we do not ship."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgres", "postgresql"):  # Heroku-style alias and the bare name
        return parsed.set(drivername="postgresql+psycopg2")
    backend = parsed.get_backend_name()
    if parsed.drivername == "postgresql+psycopg2" or backend == "sqlite":
        return parsed
    if backend == "postgresql":
        raise ConfigError(
            f"database driver {parsed.drivername!r} is not supported; use postgresql+psycopg2://",
            key="database_url",
        )
    raise ConfigError(
        f"database backend {backend!r} is not supported; use PostgreSQL or SQLite",
        key="database_url",
    )


def create_engine(url: str | URL, *, pool_size: int = 5, statement_timeout_ms: int = 30_000,
                  lock_timeout_ms: int = 15_000, connect_timeout_s: int = 10,
                  pooled: bool = True) -> Engine:
    """Every engine the project builds comes from here, so every documented URL form works
    everywhere; see the module docstring. ``pooled=False`` opens a fresh connection per use
    (health probes: a dead database shows at once instead of behind a pooled connection)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, min(SQLITE_BUSY_TIMEOUT_MS, statement_timeout_ms),
                              pooled)
    options = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={lock_timeout_ms}"
    connect_args = {"connect_timeout": max(1, connect_timeout_s),
                    "application_name": "risk-monitor", "options": options}
    pool: dict[str, Any] = {"poolclass": NullPool} if not pooled else {
        "pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": True,
        "pool_recycle": 1800}
    return sa.create_engine(parsed, connect_args=connect_args, **pool)


def _sqlite_engine(url: URL, busy_timeout_ms: int, pooled: bool) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    pool: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    engine = sa.create_engine(
        url, connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False}, **pool)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see below)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read = conn.get_execution_options().get(READ_ONLY_OPTION)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


@contextlib.contextmanager
def storage_errors(source: str = "database") -> Iterator[None]:
    """Library errors leave as our StorageError family (ours pass through untouched)."""
    try:
        yield
    except RiskMonitorError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise map_exception(exc, source=source) from exc


@contextlib.contextmanager
def write_tx(engine: Engine, *, source: str = "database") -> Iterator[Connection]:
    """One write transaction."""
    with storage_errors(source), engine.begin() as conn:
        yield conn


@contextlib.contextmanager
def write_tx_on(conn: Connection, *, source: str = "database") -> Iterator[Connection]:
    """:func:`write_tx` on a connection the caller holds (no pool checkout, no ping)."""
    with storage_errors(source), conn.begin():
        yield conn


@contextlib.contextmanager
def read_only(engine: Engine, *, source: str = "database") -> Iterator[Connection]:
    """One read transaction (deferred on SQLite, so readers never queue behind writers)."""
    with storage_errors(source), engine.connect() as raw:
        conn = raw.execution_options(**{READ_ONLY_OPTION: True})
        with conn.begin():
            yield conn


def advisory_key(name: str) -> int:
    """A signed 32-bit lock key for a name (collisions only serialise, never break)."""
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= (1 << 31) else value


def lock_names(conn: Connection, names: list[str]) -> None:
    """Take PostgreSQL transaction-scoped advisory locks, in a fixed order (no deadlocks).

    On SQLite the ``BEGIN IMMEDIATE`` of a write transaction already serialises writers.
    """
    if not is_postgres(conn):
        return
    keys = sorted({advisory_key(n) for n in names})
    if len(keys) == 1:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_NAMESPACE, keys[0])))
    elif keys:  # one round trip for many series; unnest keeps the (sorted) array order
        conn.execute(sa.text(
            "SELECT pg_advisory_xact_lock(:ns, k) FROM unnest(CAST(:keys AS integer[])) "
            "WITH ORDINALITY AS t(k, n) ORDER BY n"), {"ns": ADVISORY_NAMESPACE, "keys": keys})


def dialect_insert(bind: Engine | Connection, table: sa.Table) -> Any:
    """The backend's INSERT construct, which knows ``ON CONFLICT`` (PostgreSQL and SQLite)."""
    if is_postgres(bind):
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)
