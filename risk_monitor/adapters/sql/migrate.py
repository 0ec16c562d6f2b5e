"""Apply the Alembic migrations programmatically: ``migrate(engine)`` at start of every process.

Two processes may start together (the service and a Dagster run): on PostgreSQL the upgrade
runs inside one transaction holding an advisory lock, so the second waits and then finds the
schema at head; SQLite's ``BEGIN IMMEDIATE`` gives the same. DDL is transactional on both, so
a failed migration leaves nothing half-done.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from risk_monitor.adapters.sql.engine import lock_names, read_only, write_tx
from risk_monitor.adapters.sql.schema import VERSION_TABLE
from risk_monitor.platform.logging import get_logger

if TYPE_CHECKING:
    from alembic.config import Config

log = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged scripts (no alembic.ini needed)."""
    from alembic.config import Config  # alembic costs ~0.1 s to import: only when migrating

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts under {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with read_only(engine) as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> str:
    """Upgrade the database to ``revision`` (idempotent); returns the revision now current."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    if revision == "head" and current_revision(engine) == head_revision():
        return head_revision()  # the usual case: nothing to do, no lock taken
    config = alembic_config()
    with write_tx(engine, source="migrations") as conn:
        lock_names(conn, ["risk_monitor.migrations"])
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        now = context.get_current_revision() or ""
    log.info("database migrated", revision=now, backend=engine.dialect.name)
    return now
