"""Alembic environment of Risk Monitor's own tables, run only through ``migrate(engine)``.

``migrate`` hands over an open connection in ``config.attributes["connection"]``, already inside
a transaction that holds the migration lock.
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
    connection = context.config.attributes.get("connection")
    if context.is_offline_mode() or connection is None:
        raise RuntimeError("migrations run through risk_monitor.adapters.sql.migrate(engine) only")
    _run(connection)


_main()
