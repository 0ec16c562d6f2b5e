"""Alert series state and the outbox, written together: the ``AlertStore`` port on SQL.

Two writers evaluate the same limits: the Dagster run and the service's hot path. Planning a
transition reads the series state and writes the next one, so it must happen under a lock or
both writers plan the same "first" notification (or worse, WARN and BREACH each as the first).
:meth:`SqlAlertStore.locked` takes the lock per fingerprint for the whole read-plan-write:
a PostgreSQL transaction-scoped advisory lock (no placeholder rows needed for fingerprints never
seen; locks taken in a fixed order, so no deadlock), or ``BEGIN IMMEDIATE`` on SQLite. The
``version`` column is a second guard: a write whose read is stale fails instead of overwriting.

Notifications go into the outbox in the same transaction, ``ON CONFLICT (idempotency_key) DO
NOTHING``: re-applying a plan enqueues nothing twice, and a state change without its
notification (or the reverse) cannot be committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.audit_log import Seal
from risk_monitor.adapters.sql.engine import (
    dialect_insert,
    is_postgres,
    lock_names,
    read_only,
    storage_errors,
    write_tx,
    write_tx_on,
)
from risk_monitor.adapters.sql.outbox import InsertClaim
from risk_monitor.adapters.sql.schema import alert_states, outbox
from risk_monitor.domain.model import AlertState, LimitResult, Notification
from risk_monitor.platform.errors import StorageIntegrityError
from risk_monitor.platform.logging import get_logger

if TYPE_CHECKING:
    from risk_monitor.adapters.sql.alert_change import ChangeTransaction

log = get_logger(__name__)
SOURCE = "alert_store"


@dataclass(frozen=True)
class ApplyResult:
    """What one apply wrote: states, new outbox rows, and notifications already there."""

    states_written: int
    enqueued: int
    duplicates: int


class AlertTransaction:
    """The locked states of some fingerprints, and the way to write their next states."""

    def __init__(self, conn: Connection, states: dict[str, AlertState],
                 versions: dict[str, int], locked: frozenset[str], clock: codec.Clock) -> None:
        self.connection = conn
        self.states = states
        self._versions = versions
        self._locked = locked
        self._clock = clock
        #: outbox rows this transaction inserted (not the duplicates), as written
        self.enqueued_rows: list[dict[str, Any]] = []

    def apply(self, states: Sequence[AlertState], notifications: Sequence[Notification],
              *, claim: InsertClaim | None = None) -> ApplyResult:
        """Write next states (checked against the versions read) and enqueue notifications
        (``claim``: claimed on insert for this process's dispatcher, see ``InsertClaim``)."""
        unlocked = {s.fingerprint for s in states} | {n.fingerprint for n in notifications}
        unlocked -= self._locked
        if unlocked:
            raise ValueError(f"fingerprints not locked in this transaction: {sorted(unlocked)}")
        now = self._clock()
        self._write_states(states, now)
        for state in states:
            self.states[state.fingerprint] = state
        new = enqueue_rows(self.connection, notifications, now, claim=claim)
        self.enqueued_rows += new
        return ApplyResult(len(states), len(new), len(notifications) - len(new))

    def _write_states(self, states: Sequence[AlertState], now: datetime) -> None:
        """All states in one upsert, each guarded by the version read under the lock: a row
        whose version moved (or a "new" row that exists) is not written, and that fails."""
        latest = {s.fingerprint: s for s in states}  # one row per series (the last wins)
        if not latest:
            return
        versions = {fp: self._versions.get(fp, 0) + 1 for fp in latest}
        rows = [{**codec.state_values(s), "version": versions[fp], "updated_at": now}
                for fp, s in latest.items()]
        statement = _state_upsert(self.connection, tuple(rows[0]))
        written = {row.fingerprint for row in self.connection.execute(statement, rows)}
        if len(written) != len(versions):
            stale = sorted(set(versions) - written)
            raise StorageIntegrityError(
                f"alert states {stale} changed under a lock: a writer bypassed "
                "AlertStore.locked", source=SOURCE)
        self._versions.update(versions)

    def seal(self, *, before: Mapping[str, AlertState], states: Sequence[AlertState],
             notifications: Sequence[Notification], context: Mapping[str, Any],
             at: datetime, extra: Sequence[Seal] = ()) -> int:
        """Audit entries sealing the new notifications and changed states (issue 11), from
        what :meth:`apply` wrote (no read-back); ``extra``: more seals of this transaction
        (its compliance intervals), chained in the same statements. Call it last."""
        from risk_monitor.adapters.sql.audit_hooks import alert_seals, input_versions_row
        from risk_monitor.adapters.sql.audit_log import seal_batch

        lineage = input_versions_row(self.connection, notifications=notifications,
                                     context=context, at=at)
        seals = alert_seals(before=before, states=states, enqueued=self.enqueued_rows,
                            notifications=notifications, context=context)
        return seal_batch(self.connection, [*seals, *extra], at=at, lineage=lineage)


def enqueue_rows(conn: Connection, notifications: Sequence[Notification], now: datetime,
                 *, claim: InsertClaim | None = None) -> list[dict[str, Any]]:
    """Insert outbox rows, skipping keys already present; returns the rows that were new,
    with their ids."""
    if not notifications:
        return []
    rows = outbox_rows(notifications, now, claim=claim)
    new = {row.idempotency_key: row.id for row in conn.execute(_outbox_insert(conn), rows)}
    return [{**row, "id": new[row["idempotency_key"]]} for row in rows
            if row["idempotency_key"] in new]


def outbox_rows(notifications: Sequence[Notification], now: datetime,
                *, claim: InsertClaim | None = None) -> list[dict[str, Any]]:
    """The outbox rows of ``notifications`` as inserted (no id yet)."""
    return [
        {
            "idempotency_key": n.idempotency_key,
            "fingerprint": n.fingerprint,
            "episode": n.episode,
            "sequence": codec.sequence_of(n),
            "kind": n.kind.value,
            "alert_status": n.status.value,
            "severity": n.severity.value,
            "limit_id": n.limit_id,
            "scope": n.scope,
            "correlation_id": n.correlation_id,
            "payload": codec.notification_payload(n),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "detected_at": n.detected_at,
            "source_event_time": n.source_event_time,
            "lease_until": None,
            "claim_token": None,
            **(claim.values(n.fingerprint) if claim is not None else {}),
        }
        for n in notifications
    ]


#: the writer's statements, built once per backend (and column set): the compiled cache then
#: serves them, where a multi-row ``.values(rows)`` was built and compiled anew on every
#: change (~1 ms of CPU each); executed with the rows as parameters, SQLAlchemy sends them as
#: one multi-row statement ("insertmanyvalues") with RETURNING, one round trip
_STATEMENTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _state_upsert(conn: Connection, columns: tuple[str, ...]) -> Any:
    """The version-guarded upsert of alert states, RETURNING the fingerprints written."""
    cache_key = (conn.dialect.name, "alert_states", columns)
    statement = _STATEMENTS.get(cache_key)
    if statement is None:
        insert = dialect_insert(conn, alert_states)
        statement = insert.on_conflict_do_update(
            index_elements=["fingerprint"],
            set_={name: insert.excluded[name] for name in columns if name != "fingerprint"},
            where=alert_states.c.version + 1 == insert.excluded.version,
        ).returning(alert_states.c.fingerprint)
        _STATEMENTS[cache_key] = statement
    return statement


def _outbox_insert(conn: Connection) -> Any:
    """The outbox insert that skips keys already present, RETURNING the keys that were new."""
    cache_key = (conn.dialect.name, "outbox", ())
    statement = _STATEMENTS.get(cache_key)
    if statement is None:
        statement = (dialect_insert(conn, outbox)
                     .on_conflict_do_nothing(index_elements=["idempotency_key"])
                     .returning(outbox.c.idempotency_key, outbox.c.id))
        _STATEMENTS[cache_key] = statement
    return statement


class SqlAlertStore:
    """The ``AlertStore`` port on PostgreSQL or SQLite (see the module docstring)."""

    def __init__(self, engine: Engine, *, clock: codec.Clock = codec.utc_now) -> None:
        self.engine = engine
        self._clock = clock

    def load_states(self, fingerprints: Sequence[str]) -> dict[str, AlertState]:
        with read_only(self.engine, source=SOURCE) as conn:
            states, _ = _select_states(conn, fingerprints)
        return states

    def all_states(self) -> list[AlertState]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(alert_states).order_by(alert_states.c.fingerprint))
            return [codec.state_from_row(r._mapping) for r in rows]

    @contextlib.contextmanager
    def locked(self, fingerprints: Sequence[str], *, also_lock: Sequence[str] = (),
               durable: bool = True, connection: Connection | None = None
               ) -> Iterator[AlertTransaction]:
        """Lock the series, read their states, let the caller plan and apply; commit at exit.

        ``also_lock``: more lock names the caller's transaction needs (the compliance series
        it writes too), taken in the same ordered call, so no two writers wait on each other.
        ``durable=False``: on PostgreSQL the commit does not wait for its WAL flush
        (``synchronous_commit = off`` for this transaction only; setting
        ``service.durable_alert_commit``, whose trade-off docs/architecture.md states).
        ``connection``: the caller's own connection (the hot path's writer keeps one: no pool
        checkout and liveness ping per transaction); closed by the caller after a failure.
        """
        wanted = sorted(set(fingerprints))
        with (write_tx(self.engine, source=SOURCE) if connection is None
              else write_tx_on(connection, source=SOURCE)) as conn:
            if not durable and is_postgres(conn):
                conn.execute(_ASYNC_COMMIT)
            lock_names(conn, [*(f"alert:{fp}" for fp in wanted), *also_lock])
            states, versions = _select_states(conn, wanted)
            yield AlertTransaction(conn, states, versions, frozenset(wanted), self._clock)

    @contextlib.contextmanager
    def change(self, fingerprints: Sequence[str], *, results: Sequence[LimitResult],
               new_intervals: int, new_notifications: int, connection: Connection,
               durable: bool = True,
               reads_at: datetime | None = None) -> Iterator[ChangeTransaction]:
        """The hot path's change transaction on PostgreSQL in two round trips
        (``alert_change.py``): the series of ``fingerprints`` and the compliance series of
        ``results`` locked, then the audit chain; committed by the seal's message (at exit
        if nothing was sealed).

        The caller's ``connection`` is switched to autocommit (for good: it is the writer's
        own) and the transaction is explicit: its ``BEGIN`` travels with the first statement
        instead of costing psycopg2's round trip of its own; ``ROLLBACK`` on any failure.
        """
        from risk_monitor.adapters.sql.alert_change import ChangeTransaction, open_change

        conn = connection
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn = connection.execution_options(isolation_level="AUTOCOMMIT")
        with storage_errors(SOURCE):
            try:
                reads = open_change(conn, fingerprints, results=results,
                                    new_intervals=new_intervals,
                                    new_notifications=new_notifications, durable=durable,
                                    reads_at=reads_at)
                tx = ChangeTransaction(conn, reads, self._clock)
                yield tx
                if not tx.committed:
                    conn.exec_driver_sql("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):  # a dead connection: the caller drops it
                    conn.exec_driver_sql("ROLLBACK")
                raise

    def apply(self, states: Sequence[AlertState],
              notifications: Sequence[Notification]) -> None:
        """Persist states and enqueue notifications atomically (last writer wins on states).

        Callers that plan from a read should use :meth:`locked` instead, which checks that
        nobody wrote in between (and reports what was written).
        """
        fingerprints = [s.fingerprint for s in states] + [n.fingerprint for n in notifications]
        with self.locked(fingerprints) as tx:
            tx.apply(states, notifications)

    def message_ref(self, fingerprint: str) -> str | None:
        """The thread root ("channel:ts") of the series' current episode, if posted."""
        with read_only(self.engine, source=SOURCE) as conn:
            return conn.execute(
                sa.select(alert_states.c.message_ref)
                .where(alert_states.c.fingerprint == fingerprint)
            ).scalar_one_or_none()


_ASYNC_COMMIT = sa.text("SET LOCAL synchronous_commit = off")
_SELECT_STATES = sa.select(alert_states).where(
    alert_states.c.fingerprint.in_(sa.bindparam("fingerprints", expanding=True)))


def _select_states(conn: Connection, fingerprints: Sequence[str]
                   ) -> tuple[dict[str, AlertState], dict[str, int]]:
    states: dict[str, AlertState] = {}
    versions: dict[str, int] = {}
    wanted = list(set(fingerprints))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        rows = conn.execute(_SELECT_STATES, {"fingerprints": chunk})
        for row in rows:
            mapping = row._mapping
            states[mapping["fingerprint"]] = codec.state_from_row(mapping)
            versions[mapping["fingerprint"]] = mapping["version"]
    return states, versions
