"""Alembic environment of Risk Monitor's own tables (run through ``migrate(url)``).

``migrate`` hands over an open connection in ``config.attributes["connection"]``, already inside
a transaction that holds the migration lock. Without one (the ``alembic`` command line with
``-x url=...``), this file opens its own engine.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from risk_monitor.adapters.sql.schema import VERSION_TABLE, metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (SQL script) migrations are not supported; use migrate(url)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from risk_monitor.adapters.sql.engine import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or use migrate(url)")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
