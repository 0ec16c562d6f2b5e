"""The embedded Dagster instance's SQLite files commit without fsync; nothing else changes."""

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from risk_monitor.defs import sqlite_instance
from risk_monitor.platform.errors import ConfigError


def synchronous_of(path: Path) -> int:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("PRAGMA synchronous")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def restore_hook():
    yield
    sqlite_instance.commit_without_fsync()  # back to this process's own environment


def test_off_under_dagster_home_only(tmp_path, monkeypatch, restore_hook):
    home, elsewhere = tmp_path / "dagster_home", tmp_path / "risk_store"
    (home / "history" / "runs").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv(sqlite_instance.SYNC_ENV, raising=False)
    sqlite_instance.commit_without_fsync()
    sqlite_instance.commit_without_fsync()  # idempotent
    assert synchronous_of(home / "history" / "runs.db") == 0
    assert synchronous_of(home / "history" / "runs" / "index.db") == 0
    assert synchronous_of(home / "risk_monitor.db") == 2  # not Dagster's: SQLite's default, FULL
    assert synchronous_of(elsewhere / "store.db") == 2
    raw = sqlite3.connect(home / "history" / "raw.db")  # not through SQLAlchemy: untouched
    assert raw.execute("PRAGMA synchronous").fetchone() == (2,)
    raw.close()


def test_follows_the_configured_mode(tmp_path, monkeypatch, restore_hook):
    (tmp_path / "schedules").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv(sqlite_instance.SYNC_ENV, "normal")
    sqlite_instance.commit_without_fsync()
    assert synchronous_of(tmp_path / "schedules" / "a.db") == 1
    monkeypatch.setenv(sqlite_instance.SYNC_ENV, "full")
    sqlite_instance.commit_without_fsync()
    assert synchronous_of(tmp_path / "schedules" / "b.db") == 2


def test_a_bad_mode_is_a_typed_error(monkeypatch):
    monkeypatch.setenv(sqlite_instance.SYNC_ENV, "fast")
    with pytest.raises(ConfigError, match="RISK_MONITOR_DAGSTER_SQLITE_SYNC"):
        sqlite_instance.commit_without_fsync()
