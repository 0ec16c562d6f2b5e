"""Migrations apply to empty PostgreSQL and SQLite databases, idempotently, matching schema.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from risk_monitor.adapters.sql import create_engine, current_revision, head_revision, migrate
from risk_monitor.adapters.sql.engine import normalise_url
from risk_monitor.adapters.sql.schema import VERSION_TABLE, metadata
from risk_monitor.platform.errors import ConfigError
from risk_monitor_tests.fixtures.storage import sqlite_url


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("fresh_postgres_url")
        return url
    return sqlite_url(tmp_path)


def _schema_diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        return list(compare_metadata(context, metadata))


def test_migrations_create_the_schema_and_are_idempotent(empty_url: str) -> None:
    engine = create_engine(empty_url)
    try:
        assert current_revision(engine) is None
        assert migrate(engine) == head_revision()
        assert migrate(engine) == head_revision()  # second run: nothing to do
        assert current_revision(engine) == head_revision()
        tables = set(sa.inspect(engine).get_table_names())
        assert {t.name for t in metadata.sorted_tables} <= tables
        assert VERSION_TABLE in tables
        assert "alembic_version" not in tables  # Dagster's version table stays Dagster's
        assert _schema_diff(engine) == []  # migrations and schema.py describe the same tables
    finally:
        engine.dispose()


def test_two_processes_migrating_at_once_both_succeed(fresh_postgres_url: str) -> None:
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            engine = create_engine(fresh_postgres_url)  # one engine per process
            try:
                barrier.wait(10)
                results.append(migrate(engine))
            finally:
                engine.dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert results == [head_revision(), head_revision()]


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 5000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_urls_pin_psycopg2_and_refuse_other_backends() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg2"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg2"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(ConfigError):
        normalise_url("mysql://u@h/db")
    with pytest.raises(ConfigError):
        normalise_url("postgresql+asyncpg://u@h/db")
