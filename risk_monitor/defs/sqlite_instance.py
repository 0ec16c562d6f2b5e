"""Commits to the embedded Dagster instance's SQLite files without waiting for the disk.

Why: Dagster's SQLite event log opens a new connection for every event it writes (~140 per
``risk_cycle`` run, asset and check events twice: run shard and index), commits, and closes
it; closing the last connection of a WAL database checkpoints it. With SQLite's default
``synchronous=FULL`` each of those commits and checkpoints waits for the disk: ~20 ms per
event here, several seconds per run. ``synchronous=OFF`` brings it to ~1 ms.

The trade: a committed event survives a crash of the process (the data is in the operating
system), but an operating-system crash or power loss can lose the last events, or damage the
file. That suits the embedded instance (the demo, ``risk-monitor dev``: run history that can be
rebuilt), never a production instance, which runs Dagster on PostgreSQL
(deploy/postgres/dagster.yaml) where this module changes nothing. Only Dagster's own storage
files (``$DAGSTER_HOME/history/``, ``$DAGSTER_HOME/schedules/``) are touched: the risk store
keeps its own settings (``risk_monitor.adapters.sql.engine``) wherever it lives.

Environment (read where the definitions load: every run process, the code server, the demo):
``RISK_MONITOR_DAGSTER_SQLITE_SYNC`` = ``off`` (default) | ``normal`` | ``full`` (SQLite's own
default, for an embedded instance that must survive power loss).
"""

import functools
import os
import sqlite3
from typing import Any

from risk_monitor.platform.errors import ConfigError

SYNC_ENV = "RISK_MONITOR_DAGSTER_SQLITE_SYNC"
SYNC_MODES = ("off", "normal", "full")
#: where Dagster's SQLite storages keep their files under ``$DAGSTER_HOME`` (runs, event log
#: shards and index; schedules and sensor ticks); nothing else there is touched
STORAGE_DIRS = ("history", "schedules")
#: what the hook applies, fixed when it is installed: the mode and the storage directories
_hook: dict[str, Any] = {"mode": "", "dirs": ()}


def sync_mode() -> str:
    """The configured ``synchronous`` mode for Dagster's SQLite files (a typed error if bad)."""
    mode = os.environ.get(SYNC_ENV, "off").strip().lower() or "off"
    if mode not in SYNC_MODES:
        raise ConfigError(f"{SYNC_ENV} must be one of {', '.join(SYNC_MODES)}, not {mode!r}",
                          key=SYNC_ENV)
    return mode


@functools.lru_cache(maxsize=256)
def _in_dagster_home(path: str) -> bool:
    return os.path.realpath(path).startswith(_hook["dirs"]) if _hook["dirs"] else False


def _set_synchronous(dbapi_connection: Any, _record: Any) -> None:
    """SQLAlchemy ``connect`` hook: ``PRAGMA synchronous`` on Dagster's own SQLite files."""
    if not _hook["mode"] or not isinstance(dbapi_connection, sqlite3.Connection):
        return
    rows = dbapi_connection.execute("PRAGMA database_list").fetchall()
    path = next((row[2] for row in rows if row[1] == "main"), "")
    if path and _in_dagster_home(path):
        dbapi_connection.execute(f"PRAGMA synchronous={_hook['mode']}")


def commit_without_fsync() -> None:
    """Install the hook (once per process) for the current ``$DAGSTER_HOME`` and mode; a later
    call follows a changed home or mode, ``full`` or no home leaves connections as they are."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    mode, home = sync_mode(), os.environ.get("DAGSTER_HOME")
    applies = mode != "full" and bool(home)
    root = os.path.realpath(home) if home and applies else ""
    _hook.update(mode=mode.upper() if applies else "",
                 dirs=tuple(os.path.join(root, d, "") for d in STORAGE_DIRS) if root else ())
    _in_dagster_home.cache_clear()
    if applies and not event.contains(Engine, "connect", _set_synchronous):
        event.listen(Engine, "connect", _set_synchronous)
