"""Append-only, hash-chained audit trail: the ``AuditLog`` port on SQL.

Each alert, evaluation and configuration change writes one entry with the Dagster run id, the
input data versions, the limit configuration version and the code version in ``payload``;
``correlation_id`` ties them to the alert's Slack message and log lines. Payloads are redacted
before they are stored.

Tamper evidence (docs/audit.md): every entry stores the previous entry's hash and the hash of
its own canonical content (``domain/audit_chain.py``). Covered rows (:data:`COVERAGE`) are
sealed by :func:`seal_rows` / :func:`seal_batch` in the transaction that changed them: an entry with the
digest of the row's audited columns, whose hash the row then carries. Appends serialise on one
PostgreSQL advisory lock held to commit (SQLite's ``BEGIN IMMEDIATE`` already serialises
writers), so the chain stays linear with the service and Dagster runs writing at once. Take
this lock last in a transaction: every writer does, so no two wait on each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.sql import audit_lineage, codec
from risk_monitor.adapters.sql.engine import is_postgres, lock_names, read_only, write_tx
from risk_monitor.adapters.sql.schema import (
    alert_states,
    audit_log,
    compliance_intervals,
    limit_config_versions,
    outbox,
)
from risk_monitor.domain.audit_chain import GENESIS_HASH, entry_hash, row_digest
from risk_monitor.platform.code_version import code_version

SOURCE = "audit_log"
CHAIN_LOCK = "audit_log.chain"
_HEAD_KEY = "risk_monitor.audit_head"
_CHUNK = 500  # keys per IN list


@dataclass(frozen=True)
class Coverage:
    """A table whose rows the chain seals: its key column and the columns that are audited.

    Working figures that change on every evaluation (last sighting, current value, delivery
    attempts) are left out on purpose: sealing them would write an entry per tick. What a
    reviewer relies on (status, episode, timeline boundaries, what was notified) is in.
    """

    table: sa.Table
    key: str
    columns: tuple[str, ...]

    def subject(self, key: Any) -> str:
        return f"{self.table.name}:{key}"

    def digest(self, row: Mapping[str, Any]) -> str:
        return row_digest(row, self.columns)


COVERAGE: dict[str, Coverage] = {c.table.name: c for c in (
    Coverage(alert_states, "fingerprint",
             ("fingerprint", "limit_id", "scope", "status", "severity", "started_at",
              "episode", "sequence", "correlation_id")),
    Coverage(outbox, "idempotency_key",
             ("idempotency_key", "fingerprint", "episode", "sequence", "kind", "alert_status",
              "severity", "limit_id", "scope", "correlation_id", "payload", "detected_at",
              "source_event_time")),
    Coverage(compliance_intervals, "id",
             ("id", "limit_id", "scope", "status", "since", "until", "config_version")),
    Coverage(limit_config_versions, "version", ("version", "applied_at", "source", "document")),
)}


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    event: str
    correlation_id: str | None
    run_id: str | None
    payload: dict[str, Any]
    prev_hash: str | None = None
    entry_hash: str | None = None
    subject: str | None = None
    row_digest: str | None = None


@dataclass(frozen=True)
class ChainHead:
    """The newest hashed entry (id 0 and the genesis hash for an empty chain)."""

    id: int
    hash: str


def content_hash(prev_hash: str, at: datetime, event: str, correlation_id: str | None,
                 run_id: str | None, subject: str | None, digest: str | None,
                 payload: Mapping[str, Any]) -> str:
    return entry_hash(prev_hash=prev_hash, at=at, event=event, correlation_id=correlation_id,
                      run_id=run_id, subject=subject, row_digest=digest, payload=payload)


_READ_HEAD = (sa.select(audit_log.c.id, audit_log.c.entry_hash)
              .where(audit_log.c.entry_hash.is_not(None))
              .order_by(audit_log.c.id.desc()).limit(1))


def read_head(conn: Connection) -> ChainHead:
    row = conn.execute(_READ_HEAD).first()
    return ChainHead(0, GENESIS_HASH) if row is None else ChainHead(int(row.id), row.entry_hash)


def append(conn: Connection, event: str, at: datetime, correlation_id: str | None,
           payload: Mapping[str, Any], *, run_id: str | None = None,
           subject: str | None = None, digest: str | None = None) -> str:
    """Append one entry in ``conn``'s transaction; returns its hash.

    ``run_id`` defaults to ``payload["run_id"]``.
    """
    entry = _entry(_locked_head(conn), event, at, correlation_id, payload, run_id=run_id,
                   subject=subject, digest=digest)
    conn.execute(audit_log.insert().values(**entry))
    conn.info[_HEAD_KEY] = (conn.get_transaction(), entry["entry_hash"])
    return str(entry["entry_hash"])


def _entry(prev: str, event: str, at: datetime, correlation_id: str | None,
           payload: Mapping[str, Any], *, run_id: str | None, subject: str | None,
           digest: str | None) -> dict[str, Any]:
    """One audit_log row chained onto ``prev`` (``run_id`` defaults to ``payload["run_id"]``)."""
    body = codec.safe_document(dict(payload))
    body.setdefault("code_version", code_version())
    run = run_id or (str(payload["run_id"]) if payload.get("run_id") else None)
    sealed_hash = content_hash(prev, at, event, correlation_id, run, subject, digest, body)
    return {"at": at, "event": event, "correlation_id": correlation_id, "run_id": run,
            "payload": body, "prev_hash": prev, "entry_hash": sealed_hash, "subject": subject,
            "row_digest": digest}


RowText = Callable[[Mapping[str, Any]], str | None]
RowPayload = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class Seal:
    """One covered row to seal, with its values as this transaction wrote them."""

    table: str
    row: Mapping[str, Any]
    event: str
    correlation_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None


def seal_rows(conn: Connection, table: str, keys: Iterable[Any], *,
              event: str | Callable[[Mapping[str, Any]], str], at: datetime,
              correlation_id: RowText = lambda _row: None,
              payload: RowPayload = lambda _row: {}, run_id: str | None = None) -> int:
    """Seal the rows of a covered table whose audited columns changed since their last seal
    (or were never sealed): one entry each, and the row carries its hash.

    Runs in the caller's transaction, after the rows were written; returns entries written.
    Reads the rows back; a writer that holds the rows it wrote uses :func:`seal_batch`.
    """
    coverage = COVERAGE[table]
    wanted = sorted(set(keys), key=str)
    if not wanted:
        return 0
    t, key_column = coverage.table, coverage.table.c[coverage.key]
    rows: list[Mapping[str, Any]] = []
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        rows += [dict(r._mapping) for r in conn.execute(sa.select(t).where(key_column.in_(chunk)))]
    sealed = {r["audit_hash"] for r in rows if r["audit_hash"]}
    previous: dict[str, str | None] = {}
    if sealed:
        previous = {str(h): d for h, d in conn.execute(
            sa.select(audit_log.c.entry_hash, audit_log.c.row_digest)
            .where(audit_log.c.entry_hash.in_(sorted(sealed))))}
    seals = [
        Seal(table, row, event if isinstance(event, str) else event(row), correlation_id(row),
             payload(row), run_id)
        for row in sorted(rows, key=lambda r: str(r[coverage.key]))
        if not (row["audit_hash"] and previous.get(row["audit_hash"]) == coverage.digest(row))
    ]  # skipped: audited columns unchanged since the last seal
    return seal_batch(conn, seals, at=at)


def seal_batch(conn: Connection, seals: Sequence[Seal], *, at: datetime,
               lineage: audit_lineage.PendingRow | None = None) -> int:
    """Seal rows the caller just wrote and still holds (no read-back): one entry each,
    chained in the given order, and each row carries its entry's hash; ``lineage``: the
    evaluation's versions the entries name by digest, written in the same statement.

    Takes the chain lock, so call it last in the transaction, once, with every seal of the
    transaction: the lock is then held for three statements (head, entries, row hashes)
    plus the commit. Returns entries written.
    """
    if not seals:
        if lineage is not None:
            audit_lineage.write(conn, lineage)
        return 0
    entries, hashes = chain_entries(_locked_head(conn), seals, at=at)
    head = entries[-1]["entry_hash"]
    statement = _sealing_statement(conn, entries, hashes, lineage)
    if statement is not None:  # PostgreSQL, a few rows: one round trip for all of it
        inserted = conn.execute(*statement).scalar_one()
        if lineage is not None:
            lineage.settle(inserted)
    else:
        if lineage is not None:
            audit_lineage.write(conn, lineage)
        # One multi-row INSERT (ids follow the list's order, which is the chain's) and one
        # UPDATE per table (a CASE over the keys): a few statements, however many rows.
        conn.execute(audit_log.insert(), entries)
        for table, by_key in hashes.items():
            _set_hashes(conn, COVERAGE[table], by_key)
    conn.info[_HEAD_KEY] = (conn.get_transaction(), head)
    return len(entries)


def chain_entries(head: str, seals: Sequence[Seal], *, at: datetime
                  ) -> tuple[list[dict[str, Any]], dict[str, dict[Any, str]]]:
    """The audit_log rows sealing ``seals``, chained in order onto ``head``, and the hash
    each sealed row then carries (per table, per key; a row sealed twice keeps the last)."""
    entries: list[dict[str, Any]] = []
    hashes: dict[str, dict[Any, str]] = {}
    for seal in seals:
        coverage = COVERAGE[seal.table]
        key = seal.row[coverage.key]
        entry = _entry(head, seal.event, at, seal.correlation_id, seal.payload,
                       run_id=seal.run_id, subject=coverage.subject(key),
                       digest=coverage.digest(seal.row))
        head = entry["entry_hash"]
        entries.append(entry)
        hashes.setdefault(seal.table, {})[key] = head
    return entries, hashes


#: the most rows (entries, and keys per table) the one-statement seal takes; beyond, the
#: statements below (a writer's change seals ~4 rows; periodic writes may seal hundreds)
_ONE_STATEMENT_ROWS = 64
_SEALING_STATEMENTS: dict[tuple[Any, ...], sa.Select[Any]] = {}


def _sealing_statement(conn: Connection, entries: Sequence[Mapping[str, Any]],
                       hashes: Mapping[str, Mapping[Any, str]],
                       lineage: audit_lineage.PendingRow | None
                       ) -> tuple[sa.Select[Any], dict[str, Any]] | None:
    """On PostgreSQL, the entries' INSERT, each table's ``audit_hash`` UPDATE and the
    evaluation's version row (``lineage``) as data-modifying CTEs of one statement (same SQL
    effect, one round trip instead of up to five: every round trip of the writer waits for
    the interpreter lock too); it returns how many version rows it inserted. Built once per
    shape (rows per part) and cached, so it is compiled once; None: use separate statements."""
    if (not is_postgres(conn) or len(entries) > _ONE_STATEMENT_ROWS
            or any(len(keys) > _ONE_STATEMENT_ROWS for keys in hashes.values())):
        return None
    columns = tuple(entries[0])
    shape = (columns, len(entries), tuple((t, len(keys)) for t, keys in hashes.items()),
             lineage is not None)
    statement = _SEALING_STATEMENTS.get(shape)
    if statement is None:
        if len(_SEALING_STATEMENTS) > 256:
            _SEALING_STATEMENTS.clear()
        statement = _build_sealing_statement(*shape)
        _SEALING_STATEMENTS[shape] = statement
    params: dict[str, Any] = audit_lineage.cte_params(lineage) if lineage is not None else {}
    for i, entry in enumerate(entries):
        params.update({f"e{i}_{c}": entry[c] for c in columns})
    for n, (_table, by_key) in enumerate(hashes.items()):
        for j, (key, sealed) in enumerate(by_key.items()):
            params[f"t{n}_k{j}"] = key
            params[f"t{n}_h{j}"] = sealed
    return statement, params


def _build_sealing_statement(columns: tuple[str, ...], entries: int,
                             tables: tuple[tuple[str, int], ...],
                             lineage: bool) -> sa.Select[Any]:
    # INSERT ... SELECT of one row per entry, in the chain's order (ORDER BY the ordinal),
    # so the ids follow it as with the multi-row INSERT; a multi-row VALUES has no cache key
    # in SQLAlchemy and would be compiled again on every seal (~1.5 ms)
    rows = [sa.select(*[sa.bindparam(f"e{i}_{c}", type_=audit_log.c[c].type).label(c)
                        for c in columns], sa.literal(i).label("ordinal"))
            for i in range(entries)]
    source = (rows[0] if entries == 1 else sa.union_all(*rows)).subquery("entries")
    ordered = sa.select(*[source.c[c] for c in columns]).order_by(source.c.ordinal)
    parts: list[Any] = [audit_log.insert().from_select(columns, ordered).cte("sealed_entries")]
    for n, (table, keys) in enumerate(tables):
        coverage = COVERAGE[table]
        key_column = coverage.table.c[coverage.key]
        sealed_type = coverage.table.c.audit_hash.type
        whens = [(key_column == sa.bindparam(f"t{n}_k{j}"),
                  sa.bindparam(f"t{n}_h{j}", type_=sealed_type)) for j in range(keys)]
        parts.append(
            coverage.table.update()
            .where(key_column.in_([sa.bindparam(f"t{n}_k{j}") for j in range(keys)]))
            .values(audit_hash=sa.case(*whens))
            .cte(f"sealed_{table}"))
    if not lineage:
        return sa.select(sa.literal(0)).add_cte(*parts)
    row = audit_lineage.lineage_cte()
    inserted = sa.select(sa.func.count()).select_from(row).scalar_subquery()
    return sa.select(inserted).add_cte(*parts, row)


def _set_hashes(conn: Connection, coverage: Coverage, by_key: Mapping[Any, str]) -> None:
    """``audit_hash`` of many rows in one UPDATE per chunk (an executemany UPDATE is one
    round trip per row with psycopg2)."""
    key_column = coverage.table.c[coverage.key]
    items = list(by_key.items())
    for start in range(0, len(items), _CHUNK):
        chunk = dict(items[start:start + _CHUNK])
        conn.execute(coverage.table.update().where(key_column.in_(list(chunk)))
                     .values(audit_hash=sa.case(chunk, value=key_column)))


def _locked_head(conn: Connection) -> str:
    """The chain head's hash, under the chain lock (taken once per transaction)."""
    cached = conn.info.get(_HEAD_KEY)
    transaction = conn.get_transaction()
    if cached is not None and cached[0] is transaction:
        return str(cached[1])
    lock_names(conn, [CHAIN_LOCK])
    head = read_head(conn).hash
    conn.info[_HEAD_KEY] = (transaction, head)
    return head


class SqlAuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, event: str, at: datetime, correlation_id: str | None,
               payload: Mapping[str, Any], *, run_id: str | None = None,
               conn: Connection | None = None) -> str:
        """Append one entry (in ``conn``'s transaction when given); returns its hash."""
        if conn is not None:
            return append(conn, event, at, correlation_id, payload, run_id=run_id)
        with write_tx(self.engine, source=SOURCE) as own:
            return append(own, event, at, correlation_id, payload, run_id=run_id)

    # -- reading ------------------------------------------------------------------------------
    def head(self) -> ChainHead:
        with read_only(self.engine, source=SOURCE) as conn:
            return read_head(conn)

    def by_correlation(self, correlation_id: str) -> list[AuditRecord]:
        return self._query(audit_log.c.correlation_id == correlation_id)

    def by_run(self, run_id: str) -> list[AuditRecord]:
        return self._query(audit_log.c.run_id == run_id)

    def recent(self, limit: int = 100, event: str | None = None) -> list[AuditRecord]:
        """Newest first."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if event is not None:
            query = query.where(audit_log.c.event == event)
        with read_only(self.engine, source=SOURCE) as conn:
            return _records(conn, conn.execute(query))

    def _query(self, where: sa.ColumnElement[bool]) -> list[AuditRecord]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(audit_log).where(where).order_by(audit_log.c.id))
            return _records(conn, rows)


def _records(conn: Connection, rows: Iterable[Any]) -> list[AuditRecord]:
    """Records as read, each hot-path alert entry with the versions its digest names."""
    raw = [dict(r._mapping) for r in rows]
    payloads = audit_lineage.expand(conn, [dict(r["payload"] or {}) for r in raw])
    fields = AuditRecord.__dataclass_fields__
    return [AuditRecord(**{k: r[k] for k in fields if k != "payload"}, payload=p)
            for r, p in zip(raw, payloads, strict=True)]
