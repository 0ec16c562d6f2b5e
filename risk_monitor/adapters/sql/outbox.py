"""The durable outbox: claim due notifications in order, record each outcome (the dispatcher in
:mod:`risk_monitor.adapters.sql.dispatcher` delivers them).

A row is claimed (``sending``, with a lease and a claim token) in one transaction, sent outside
any transaction, then marked in another: a crash between send and mark leaves the row
``sending`` until its lease expires (``alerts.outbox_lease_s``, seconds). Before sending a row
again, the dispatcher asks the notifier for the earlier post (Slack: message metadata carrying
the idempotency key) and adopts it, so a crash after Slack accepted a post gives no second post. Within a series (fingerprint) rows go
out strictly by ``sequence``: a row is claimable only when every earlier unfinished row of its
series is claimed with it, and a retry stops the rest of the series. A retryable failure
(Slack 5xx, timeout, 429) also ends the batch, since the next send would meet the same outage;
the delay honours Retry-After. A configuration rejection (revoked token, unknown channel) keeps
the row pending and retried on the same schedule, writes it once to the fallback sink, and marks
the notifier down (``risk_monitor_notifier_up`` 0) until a delivery succeeds. Only a rejection
of the message itself (malformed, too long) fails the row for good, after the fallback sink got
it, logged and counted.

Claims are serialised on PostgreSQL by an advisory lock (and ``FOR UPDATE SKIP LOCKED``), on
SQLite by ``BEGIN IMMEDIATE``, so two dispatchers (service replicas) never split a series.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.audit_log import SqlAuditLog
from risk_monitor.adapters.sql.engine import (
    is_postgres,
    lock_names,
    read_only,
    storage_errors,
    write_tx,
)
from risk_monitor.adapters.sql.schema import OUTBOX_STATUSES, UtcDateTime, alert_states, outbox
from risk_monitor.domain.model import Notification
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.logging import redact_text

SOURCE = "outbox"
UNFINISHED = ("pending", "sending")


@dataclass(frozen=True)
class OutboxEntry:
    """One claimed row: what to send and the token that proves the claim is ours."""

    id: int
    claim_token: str
    fingerprint: str
    episode: int
    sequence: int
    attempts: int
    notification: Notification
    fallback_ref: str | None = None


@dataclass(frozen=True)
class InsertClaim:
    """Claim-on-insert: the transaction that inserts a notification claims it for this
    process's dispatcher (``sending``, this token, this lease, first attempt), so the alert
    goes to the notifier straight after the commit, with no claim transaction of its own.
    Only series with no unfinished row before them are claimed this way (``series``): the
    in-order rule of the claim holds, and every other row waits for the dispatcher's claim."""

    token: str
    lease_until: datetime
    series: frozenset[str]  # fingerprints whose new rows are claimed

    @classmethod
    def open(cls, conn: Connection, fingerprints: Iterable[str], now: datetime,
             lease_s: float) -> InsertClaim:
        """Read (under the caller's series locks) which series have no unfinished row."""
        wanted = sorted(set(fingerprints))
        busy = {r.fingerprint for r in conn.execute(_UNFINISHED_SERIES,
                                                    {"fingerprints": wanted})} if wanted else set()
        return cls.of(wanted, busy, now, lease_s)

    @classmethod
    def of(cls, fingerprints: Iterable[str], busy: Iterable[str], now: datetime,
           lease_s: float) -> InsertClaim:
        """The claim of the series of ``fingerprints`` not ``busy`` (with an unfinished row:
        the caller read them under its series locks)."""
        return cls(str(uuid.uuid4()), now + timedelta(seconds=lease_s),
                   frozenset(fingerprints) - frozenset(busy))

    def values(self, fingerprint: str) -> dict[str, Any]:
        """The outbox columns of a new row of ``fingerprint`` (empty: not claimed)."""
        if fingerprint not in self.series:
            return {}
        return {"status": "sending", "attempts": 1, "claim_token": self.token,
                "lease_until": self.lease_until}

    def entries(self, rows: Iterable[dict[str, Any]]) -> list[OutboxEntry]:
        """The claimed ones of the rows an insert wrote (with their ids), in series order."""
        return [OutboxEntry(id=int(r["id"]), claim_token=self.token,
                            fingerprint=r["fingerprint"], episode=r["episode"],
                            sequence=r["sequence"], attempts=1,
                            notification=codec.notification_from_payload(r["payload"]))
                for r in sorted(rows, key=lambda r: (r["fingerprint"], r["sequence"]))
                if r.get("claim_token") == self.token]


@dataclass(frozen=True)
class DeliveryBacklog:
    """Undelivered notifications older than the overdue threshold (for /readyz)."""

    overdue: int
    oldest_created_at: datetime | None
    oldest_key: str | None

    def age_s(self, now: datetime) -> float:
        return 0.0 if self.oldest_created_at is None else \
            max(0.0, (now - self.oldest_created_at).total_seconds())


@dataclass(frozen=True)
class OutboxRow:
    """A row as stored, for operators, the service API and tests."""

    id: int
    idempotency_key: str
    fingerprint: str
    episode: int
    sequence: int
    kind: str
    alert_status: str
    severity: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_error_code: str | None
    delivery_ref: str | None
    created_at: datetime
    detected_at: datetime
    source_event_time: datetime | None
    notified_at: datetime | None
    correlation_id: str
    fallback_ref: str | None
    suppressed_by: str | None = None

class OutboxRepository:
    """The SQL side of the outbox: claim, mark, reschedule, inspect."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._records: Connection | None = None  # autocommit, for :meth:`_record`
        self._records_lock = threading.Lock()

    def close(self) -> None:
        """Give back the connection the delivery records keep."""
        with self._records_lock:
            conn, self._records = self._records, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _record(self, statement: str, params: dict[str, Any]) -> Any:
        """One statement in autocommit on the records' own connection (no pool checkout,
        ping or BEGIN): its first column. A connection found dead (the database restarted)
        is replaced once; the statement is guarded by the claim token, so a repeat of one
        that committed changes nothing."""
        with self._records_lock:
            try:
                return self._execute_record(statement, params)
            except RiskMonitorError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated):
                    raise
            return self._execute_record(statement, params)

    def _execute_record(self, statement: str, params: dict[str, Any]) -> Any:
        with storage_errors(SOURCE):
            if self._records is None:
                self._records = self.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
            conn = self._records
            try:
                return conn.exec_driver_sql(statement, params).scalar_one()
            except Exception:
                self._records = None
                with contextlib.suppress(Exception):
                    conn.close()
                raise

    # -- claiming -------------------------------------------------------------------------------
    def claim(self, batch: int, now: datetime, lease_s: float, *,
              reads: Callable[[Connection, list[OutboxEntry]], None] | None = None
              ) -> list[OutboxEntry]:
        """Claim up to ``batch`` due rows, each series' rows as an in-order prefix.

        ``reads``: what the caller reads about the rows it claimed, in the claim's transaction
        (the dispatcher's silences, acknowledgements and thread roots: one transaction before
        the send, not one per read).
        """
        token = str(uuid.uuid4())
        with write_tx(self.engine, source=SOURCE) as conn:
            lock_names(conn, ["risk_monitor.outbox.claim"])
            statements = _claim_statements(conn)
            accepted = _in_order_prefixes(
                conn.execute(statements.series, {"now": now, "batch": batch}))
            if not accepted:
                return []
            rows = conn.execute(statements.take, {
                "ids": accepted, "token": token,
                "lease_until": now + timedelta(seconds=lease_s)}).all()
            entries = [
                OutboxEntry(id=r.id, claim_token=token, fingerprint=r.fingerprint,
                            episode=r.episode, sequence=r.sequence, attempts=r.attempts,
                            notification=codec.notification_from_payload(r.payload),
                            fallback_ref=r.fallback_ref)
                for r in sorted(rows, key=lambda r: (r.fingerprint, r.sequence))
            ]
            if reads is not None and entries:
                reads(conn, entries)
            return entries

    def thread_roots(self, entries: Sequence[OutboxEntry], *, conn: Connection | None = None
                     ) -> dict[tuple[str, int], str]:
        """Delivery ref of the first sent message of each (fingerprint, episode) in play
        (in ``conn``'s transaction when given)."""
        if not entries:
            return {}
        if conn is None:
            with read_only(self.engine, source=SOURCE) as own:
                return self.thread_roots(entries, conn=own)
        roots: dict[tuple[str, int], str] = {}
        rows = conn.execute(_THREAD_ROOTS, {
            "fingerprints": sorted({e.fingerprint for e in entries}),
            "episodes": sorted({e.episode for e in entries})})
        for row in rows:
            roots.setdefault((row.fingerprint, row.episode), row.delivery_ref)
        return roots

    # -- outcomes -------------------------------------------------------------------------------
    def mark_sent(self, entry: OutboxEntry, delivery_ref: str, now: datetime,
                  *, thread_root: bool) -> bool:
        """Record a delivery; False when our lease was lost (someone may send it again).
        On PostgreSQL one statement (the alert's thread root with it), one round trip after
        the post: on a connection of the repository's own in autocommit (:meth:`close`), where
        a pooled one cost a liveness ping, BEGIN, two updates and COMMIT."""
        if is_postgres(self.engine):
            if now.tzinfo is None:
                raise ValueError(f"naive datetime {now!r}: pass timezone-aware UTC times")
            return bool(self._record(_MARK_SENT_PG, {
                "id": entry.id, "token": entry.claim_token, "ref": delivery_ref, "now": now,
                "root": thread_root, "fingerprint": entry.fingerprint,
                "episode": entry.episode}))
        with write_tx(self.engine, source=SOURCE) as conn:
            done = _update_claimed(conn, entry, status="sent", delivery_ref=delivery_ref,
                                   notified_at=now, finished_at=now)
            if done and thread_root:
                conn.execute(
                    alert_states.update()
                    .where(alert_states.c.fingerprint == entry.fingerprint,
                           alert_states.c.episode == entry.episode)
                    .values(message_ref=delivery_ref)
                )
        return done

    def reschedule(self, entry: OutboxEntry, next_attempt_at: datetime,
                   error: RiskMonitorError) -> bool:
        with write_tx(self.engine, source=SOURCE) as conn:
            return _update_claimed(conn, entry, status="pending", next_attempt_at=next_attempt_at,
                                   last_error=_error_text(error), last_error_code=error.code)

    def mark_failed(self, entry: OutboxEntry, now: datetime, error: RiskMonitorError) -> bool:
        with write_tx(self.engine, source=SOURCE) as conn:
            return _update_claimed(conn, entry, status="failed", finished_at=now,
                                   last_error=_error_text(error), last_error_code=error.code)

    def mark_suppressed(self, entry: OutboxEntry, now: datetime, held_by: str,
                        audit_payload: dict[str, Any] | None = None) -> bool:
        """Record a row held back by a silence or an acknowledgement: finished, never sent,
        kept with what held it (and audited in the same transaction)."""
        with write_tx(self.engine, source=SOURCE) as conn:
            done = _update_claimed(conn, entry, status="suppressed", finished_at=now,
                                   suppressed_by=held_by[:500], attempts=outbox.c.attempts - 1)
            if done and audit_payload is not None:
                SqlAuditLog(self.engine).record(
                    "alert_notification_suppressed", now,
                    entry.notification.correlation_id, audit_payload, conn=conn)
        return done

    def record_fallback(self, entry: OutboxEntry, fallback_ref: str) -> bool:
        """Remember that the fallback sink has this row, so each retry does not write it again."""
        with write_tx(self.engine, source=SOURCE) as conn:
            return _update_claimed(conn, entry, keep_claim=True, fallback_ref=fallback_ref)

    def release(self, entries: Sequence[OutboxEntry], not_before: datetime | None) -> int:
        """Give claimed rows back unsent (not counted as an attempt)."""
        if not entries:
            return 0
        released = 0
        with write_tx(self.engine, source=SOURCE) as conn:
            for entry in entries:
                values: dict[str, Any] = {"status": "pending", "attempts": outbox.c.attempts - 1}
                if not_before is not None:
                    later = sa.literal(not_before, UtcDateTime())
                    values["next_attempt_at"] = sa.case(
                        (outbox.c.next_attempt_at < later, later), else_=outbox.c.next_attempt_at)
                released += _update_claimed(conn, entry, **values)
        return released

    # -- inspection -----------------------------------------------------------------------------
    def rows(self, *, fingerprint: str | None = None, status: str | None = None,
             limit: int = 1000) -> list[OutboxRow]:
        query = sa.select(*[outbox.c[f] for f in OutboxRow.__dataclass_fields__])
        if fingerprint is not None:
            query = query.where(outbox.c.fingerprint == fingerprint)
        if status is not None:
            query = query.where(outbox.c.status == status)
        query = query.order_by(outbox.c.id).limit(limit)
        with read_only(self.engine, source=SOURCE) as conn:
            return [OutboxRow(**dict(r._mapping)) for r in conn.execute(query)]

    def recent(self, limit: int = 50) -> list[tuple[OutboxRow, Notification]]:
        """The alert feed: newest notifications first, with their delivery state."""
        fields = [outbox.c[f] for f in OutboxRow.__dataclass_fields__]
        query = sa.select(*fields, outbox.c.payload).order_by(outbox.c.id.desc()).limit(limit)
        with read_only(self.engine, source=SOURCE) as conn:
            found: list[tuple[OutboxRow, Notification]] = []
            for r in conn.execute(query):
                values = dict(r._mapping)
                payload = values.pop("payload")
                found.append((OutboxRow(**values), codec.notification_from_payload(payload)))
            return found

    def overdue(self, now: datetime, older_than_s: float) -> DeliveryBacklog:
        """Unfinished rows created more than ``older_than_s`` ago: alerts late for delivery."""
        cutoff = now - timedelta(seconds=older_than_s)
        late = sa.and_(outbox.c.status.in_(UNFINISHED), outbox.c.created_at <= cutoff)
        with read_only(self.engine, source=SOURCE) as conn:
            count = conn.execute(sa.select(sa.func.count()).where(late)).scalar_one()
            oldest = conn.execute(
                sa.select(outbox.c.created_at, outbox.c.idempotency_key).where(late)
                .order_by(outbox.c.created_at, outbox.c.id).limit(1)
            ).first()
        return DeliveryBacklog(overdue=int(count),
                               oldest_created_at=oldest.created_at if oldest else None,
                               oldest_key=oldest.idempotency_key if oldest else None)

    def counts(self) -> dict[str, int]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(
                sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)
            )
            found: dict[str, int] = {str(r[0]): int(r[1]) for r in rows}
        return {status: found.get(status, 0) for status in OUTBOX_STATUSES}


@dataclass(frozen=True)
class _ClaimStatements:
    """The claim's statements, built once per backend (the compiled cache then serves them:
    built anew per claim they cost a third of the dispatcher's CPU)."""

    #: every unfinished row of the series with a due row (up to :batch due rows, oldest
    #: first, as of :now), in series order, each marked claimable when it is one of them
    series: Any
    take: Any  # claim the accepted rows, RETURNING what the dispatcher needs


_CLAIM_STATEMENTS: dict[str, _ClaimStatements] = {}

#: :meth:`OutboxRepository.mark_sent` on PostgreSQL: the row (while our claim holds) and, for
#: the first message of an episode, the series' thread root, atomically in one statement
_MARK_SENT_PG = (
    "WITH done AS (UPDATE outbox SET status = 'sent', delivery_ref = %(ref)s,"
    " notified_at = %(now)s, finished_at = %(now)s, lease_until = NULL, claim_token = NULL"
    " WHERE id = %(id)s AND claim_token = %(token)s RETURNING id), "
    "root AS (UPDATE alert_states SET message_ref = %(ref)s"
    " WHERE %(root)s AND fingerprint = %(fingerprint)s AND episode = %(episode)s"
    " AND EXISTS (SELECT 1 FROM done) RETURNING 1) "
    "SELECT count(*) FROM done")  # (a data-modifying CTE always runs to completion)

_UNFINISHED_SERIES = (
    sa.select(outbox.c.fingerprint).distinct()
    .where(outbox.c.fingerprint.in_(sa.bindparam("fingerprints", expanding=True)),
           outbox.c.status.in_(UNFINISHED))
)

_THREAD_ROOTS = (
    sa.select(outbox.c.fingerprint, outbox.c.episode, outbox.c.delivery_ref)
    .where(outbox.c.fingerprint.in_(sa.bindparam("fingerprints", expanding=True)),
           outbox.c.episode.in_(sa.bindparam("episodes", expanding=True)),
           outbox.c.status == "sent", outbox.c.delivery_ref.is_not(None))
    .order_by(outbox.c.fingerprint, outbox.c.episode, outbox.c.sequence)
)


def _claim_statements(conn: Connection) -> _ClaimStatements:
    cached = _CLAIM_STATEMENTS.get(conn.dialect.name)
    if cached is not None:
        return cached
    now = sa.bindparam("now", type_=UtcDateTime())
    due = (
        sa.select(outbox.c.id, outbox.c.fingerprint)
        .where(sa.or_(
            sa.and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now),
            sa.and_(outbox.c.status == "sending", outbox.c.lease_until <= now),
        ))
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(sa.bindparam("batch", type_=sa.Integer()))
    )
    if is_postgres(conn):
        due = due.with_for_update(skip_locked=True)
    candidates = due.cte("due")  # one statement: the due rows and their series' rows
    series = (
        sa.select(outbox.c.id, outbox.c.fingerprint,
                  outbox.c.id.in_(sa.select(candidates.c.id)).label("claimable"))
        .where(outbox.c.fingerprint.in_(sa.select(candidates.c.fingerprint)),
               outbox.c.status.in_(UNFINISHED))
        .order_by(outbox.c.fingerprint, outbox.c.sequence)
    )
    take = (
        outbox.update().where(outbox.c.id.in_(sa.bindparam("ids", expanding=True)))
        .values(status="sending", claim_token=sa.bindparam("token"),
                lease_until=sa.bindparam("lease_until", type_=UtcDateTime()),
                attempts=outbox.c.attempts + 1)
        .returning(outbox.c.id, outbox.c.fingerprint, outbox.c.episode, outbox.c.sequence,
                   outbox.c.attempts, outbox.c.payload, outbox.c.fallback_ref)
    )
    statements = _ClaimStatements(series=series, take=take)
    _CLAIM_STATEMENTS[conn.dialect.name] = statements
    return statements


def _in_order_prefixes(unfinished: Iterable[Any]) -> list[int]:
    """Keep, per series, the claimable rows that precede every unclaimable unfinished row
    (``unfinished``: the rows of :attr:`_ClaimStatements.series`)."""
    accepted: list[int] = []
    blocked: set[str] = set()
    for row in unfinished:
        if row.fingerprint in blocked:
            continue
        if row.claimable:
            accepted.append(row.id)
        else:
            blocked.add(row.fingerprint)
    return accepted


def _update_claimed(conn: Connection, entry: OutboxEntry, *, keep_claim: bool = False,
                    **values: Any) -> bool:
    """Update ``entry``'s row while our claim holds, ending the claim unless ``keep_claim``;
    False when the lease was lost (someone may send it again)."""
    if not keep_claim:
        values.update(lease_until=None, claim_token=None)
    return bool(conn.execute(
        outbox.update().where(outbox.c.id == entry.id, outbox.c.claim_token == entry.claim_token)
        .values(**values)).rowcount)


def _error_text(error: RiskMonitorError) -> str:
    return redact_text(str(error))[:2000]
