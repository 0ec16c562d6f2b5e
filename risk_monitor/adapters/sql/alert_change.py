"""The hot path's change transaction on PostgreSQL: two round trips, the commit in the second.

A status change used to cost ~14 statements, each a round trip that also waits for the
interpreter lock, plus psycopg2's BEGIN and the COMMIT. Here (issue 10, "changed-only
writes") it is two round trips: the ``BEGIN`` travels with the first message (the writer's
connection is in autocommit and the transaction explicit: ``SqlAlertStore.change``), the
``COMMIT`` with the second:

1. **read** (:func:`open_change`): one message holds the series' advisory locks, the chain
   lock last (``audit_log.CHAIN_LOCK``: every writer takes it after its series locks), then
   one ``SELECT`` of everything planning needs, as JSON: the alert states, the open
   compliance interval of each changed series (not every series of its limit), ids for the
   intervals and the outbox rows this change may insert (``nextval``: an interval's id is in
   its seal, and an outbox row's id is known without reading the insert back), the series'
   outbox rows (unfinished ones: which series can be claimed on insert; those of the current
   episode: duplicate keys and thread roots), the active silences and the series'
   acknowledgements, and the audit chain's head. The ``SELECT`` is a statement of its own in
   the same message, so its snapshot is taken after the locks were granted (READ COMMITTED:
   one snapshot per statement; psycopg2 sends both in one simple-query message and returns
   the last one's rows). The chain lock is therefore held from the first statement to the
   commit (planning included, ~1-2 ms of CPU), not only for the seal. An id reserved for a
   row that was not inserted is a gap in the ids, nothing else;
2. **write** (:meth:`ChangeTransaction.seal`): one statement of data-modifying CTEs (each
   table's rows one JSON document, ``json_rows.records``, read by ``json_to_recordset``): the
   states (version-guarded upsert), the outbox rows, the compliance intervals, the audit
   entries and the evaluation's lineage row, then the ``COMMIT`` in the same message. Each sealed row carries its ``audit_hash`` in its own insert or update (two
   CTEs of one statement cannot both change a row), computed in Python by
   ``audit_log.chain_entries``, the one implementation of the hash that ``audit verify``
   checks. Nothing is read back: the statement itself checks that every row was written as
   planned (a state's version moved, an outbox key or interval taken by another writer) and
   fails otherwise, so the transaction aborts and the ``COMMIT`` behind it is not run
   (psycopg2 returns only the last statement's result: the checks cannot wait for Python);
3. **prepared**: the three statements are prepared once per connection (:func:`prepare`) and
   run with generic plans (``SET LOCAL plan_cache_mode``, this transaction only): the server
   plans the read and the write once, not per change (~0.5 ms of server CPU a change).

The planning itself is the generic path's: ``domain.alerts.plan_alerts`` by the caller,
``compliance_store.timeline_step`` per step (in memory, a step sees the one before it),
``alert_store.outbox_rows`` and ``audit_hooks.alert_seals``. Statements are plain driver SQL
(psycopg2 ``pyformat``), built once: no SQLAlchemy compilation per change.
"""
from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from risk_monitor.adapters.sql import audit_hooks, codec, json_rows
from risk_monitor.adapters.sql.alert_controls import ack_from_row, silence_from_row
from risk_monitor.adapters.sql.alert_store import ApplyResult, outbox_rows
from risk_monitor.adapters.sql.audit_log import CHAIN_LOCK, Seal, chain_entries
from risk_monitor.adapters.sql.compliance_store import interval_from, timeline_step
from risk_monitor.adapters.sql.engine import ADVISORY_NAMESPACE, advisory_key
from risk_monitor.adapters.sql.outbox import InsertClaim
from risk_monitor.domain.audit_chain import GENESIS_HASH
from risk_monitor.domain.compliance import StatusInterval
from risk_monitor.domain.model import AlertState, LimitResult, Notification
from risk_monitor.domain.silences import Acknowledgement, Silence
from risk_monitor.platform.errors import StorageIntegrityError

SOURCE = "alert_store"

_STATE_TIMES = ("started_at", "last_evaluated_at", "last_notified_at", "clearing_since")
_INTERVAL_TIMES = ("since", "until", "last_seen_at")
_STATE_COLUMNS = ("fingerprint", "limit_id", "scope", "status", "severity", "started_at",
                  "last_evaluated_at", "last_notified_at", "last_notified_status", "episode",
                  "sequence", "value", "utilisation", "correlation_id", "clearing_since",
                  "version", "updated_at", "audit_hash")
_OUTBOX_COLUMNS = ("id", "idempotency_key", "fingerprint", "episode", "sequence", "kind",
                   "alert_status", "severity", "limit_id", "scope", "correlation_id", "payload",
                   "status", "attempts", "next_attempt_at", "created_at", "detected_at",
                   "source_event_time", "lease_until", "claim_token", "audit_hash")
_INTERVAL_COLUMNS = ("id", "limit_id", "scope", "status", "since", "until", "last_seen_at",
                     "worst_utilisation", "config_version", "audit_hash")
_ENTRY_COLUMNS = ("at", "event", "correlation_id", "run_id", "payload", "prev_hash",
                  "entry_hash", "subject", "row_digest")
_TYPES = {"started_at": "timestamptz", "last_evaluated_at": "timestamptz",
          "last_notified_at": "timestamptz", "clearing_since": "timestamptz",
          "updated_at": "timestamptz", "next_attempt_at": "timestamptz",
          "created_at": "timestamptz", "detected_at": "timestamptz",
          "source_event_time": "timestamptz", "lease_until": "timestamptz",
          "since": "timestamptz", "until": "timestamptz", "last_seen_at": "timestamptz",
          "at": "timestamptz", "episode": "integer", "sequence": "integer",
          "version": "integer", "attempts": "integer", "id": "bigint",
          "value": "double precision", "utilisation": "double precision",
          "worst_utilisation": "double precision", "payload": "jsonb"}


#: per table, the columns ``json_rows.records`` checks (aware times) and spells (floats)
_TIMES = frozenset(c for c, kind in _TYPES.items() if kind == "timestamptz")
_FLOATS = frozenset(c for c, kind in _TYPES.items() if kind == "double precision")


def _rows_of(param: str, columns: Sequence[str]) -> str:
    """The rows of the JSON document ``param`` (``json_rows.records``), typed, in order."""
    return (f"json_to_recordset(%({param})s) AS {param}("
            + ", ".join(f"{c} {_TYPES.get(c, 'text')}" for c in columns) + ")")


_LOCKS = ("SELECT pg_advisory_xact_lock(%(ns)s, k) FROM unnest(CAST(%(keys)s AS integer[])) "
          "WITH ORDINALITY AS t(k, n) ORDER BY n")
#: one JSON text (``json_build_array`` of the reads, in ``open_change``'s order), parsed by
#: orjson: eight columns of json and arrays cost SQLAlchemy's result set-up per column and
#: psycopg2's ``json.loads`` per json column
_READ = (
    "SELECT json_build_array("
    "(SELECT json_agg(s) FROM alert_states s WHERE s.fingerprint = ANY(CAST(%(fps)s AS text[])))"
    ", "
    # the open interval of each (limit, scope) changed, not every scope of its limits: a
    # limit covers the desk (200 series), a change a few of them (issue 10: the read's cost)
    "(SELECT json_agg(c) FROM unnest(CAST(%(limit_ids)s AS text[]), CAST(%(scopes)s AS text[]))"
    " AS k(limit_id, scope) JOIN compliance_intervals c"
    " ON c.limit_id = k.limit_id AND c.scope = k.scope AND c.until IS NULL), "
    "ARRAY(SELECT nextval(pg_get_serial_sequence('compliance_intervals', 'id')) "
    "      FROM generate_series(1, %(new_ids)s)), "
    "ARRAY(SELECT nextval(pg_get_serial_sequence('outbox', 'id')) "
    "      FROM generate_series(1, %(outbox_ids)s)), "
    "(SELECT json_agg(json_build_array(o.fingerprint, o.episode, o.idempotency_key, o.status, "
    "                 o.delivery_ref) ORDER BY o.fingerprint, o.episode, o.sequence) "
    " FROM outbox o WHERE o.fingerprint = ANY(CAST(%(fps)s AS text[])) "
    "   AND (o.status IN ('pending', 'sending') OR o.episode >= coalesce("
    "        (SELECT s.episode FROM alert_states s WHERE s.fingerprint = o.fingerprint), 0))), "
    "CASE WHEN %(reads)s THEN (SELECT json_agg(a ORDER BY a.created_at) FROM alert_silences a "
    " WHERE a.starts_at <= %(now)s AND a.ends_at > %(now)s "
    "   AND (a.expired_at IS NULL OR a.expired_at > %(now)s)) END, "
    "CASE WHEN %(reads)s THEN (SELECT json_agg(k ORDER BY k.id) FROM alert_acknowledgements k "
    " WHERE k.fingerprint = ANY(CAST(%(fps)s AS text[]))) END, "
    "(SELECT json_build_array(h.id, h.entry_hash) FROM (SELECT id, entry_hash FROM audit_log "
    " WHERE entry_hash IS NOT NULL ORDER BY id DESC LIMIT 1) h))::text")
_ASYNC_COMMIT = "SET LOCAL synchronous_commit = off;\n"
#: the prepared statements' plans are made once per connection, not per change (module
#: docstring, 3)
_GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan;\n"
#: the transaction's start, sent with its first statement (the connection is in autocommit:
#: ``SqlAlertStore.change``), not as psycopg2's separate round trip
_BEGIN = "BEGIN;\n"
#: ... and its end, sent with the write (module docstring, 2)
_COMMIT = "COMMIT"
#: what the write's checks raise (an invalid integer's text): rows not as planned under the locks
_STALE_STATES = "risk_monitor: alert states changed under a lock, version-guarded updates: "
_STALE_ROWS = "risk_monitor: outbox or compliance rows changed under the series locks: "

def _insert(table: str, param: str, columns: Sequence[str], tail: str) -> str:
    """``INSERT INTO table (columns) SELECT * FROM json_to_recordset(param) tail``
    (the names are this module's constants: no input reaches the SQL text)."""
    return " ".join(("INSERT INTO", table, "(", ", ".join(columns), ") SELECT * FROM",
                     _rows_of(param, columns), tail))


_WRITE = " ".join((
    "WITH states AS (",
    _insert("alert_states AS t", "s", _STATE_COLUMNS,
            "ON CONFLICT (fingerprint) DO UPDATE SET " + ", ".join(
                [f"{c} = excluded.{c}" for c in _STATE_COLUMNS[1:-1]]
                + ["audit_hash = coalesce(excluded.audit_hash, t.audit_hash)"])
            + " WHERE t.version + 1 = excluded.version RETURNING t.fingerprint"),
    "), notes AS (",
    _insert("outbox", "o", _OUTBOX_COLUMNS,
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"),
    "), updated AS (",
    "UPDATE compliance_intervals AS t SET status = u.status, until = u.until,"
    " last_seen_at = u.last_seen_at, worst_utilisation = u.worst_utilisation,"
    " config_version = u.config_version, audit_hash = coalesce(u.audit_hash, t.audit_hash)"
    " FROM", _rows_of("u", _INTERVAL_COLUMNS), "WHERE t.id = u.id RETURNING t.id",
    # after the updates (the scalar subquery runs them first): an interval closed here frees
    # the (limit, scope) slot of the partial unique index for the one opened here
    "), opened AS (",
    _insert("compliance_intervals", "i", _INTERVAL_COLUMNS,
            "WHERE (SELECT count(*) FROM updated) >= 0 RETURNING id"),
    # one row per entry, in the chain's order (ORDER BY the ordinal), so the ids follow it
    "), entries AS (",
    "INSERT INTO audit_log (", ", ".join(_ENTRY_COLUMNS), ") SELECT",
    ", ".join(_ENTRY_COLUMNS), "FROM ROWS FROM (", _rows_of("e", _ENTRY_COLUMNS).replace(
        " AS e(", " AS ("), ") WITH ORDINALITY AS e(", ", ".join(_ENTRY_COLUMNS),
    ", n) ORDER BY n RETURNING id",
    "), lineage AS (",
    "INSERT INTO evaluation_lineage (digest, recorded_at, versions)"
    " SELECT %(l_digest)s, %(l_recorded_at)s, CAST(%(l_text)s AS jsonb)"
    " WHERE %(l_digest)s IS NOT NULL ON CONFLICT DO NOTHING RETURNING digest",
    # the checks: a row not written as planned aborts the transaction (the COMMIT after it in
    # the message is then not run). The error is a cast of the finding to integer: plain SQL
    # has no RAISE, and the text depends on a subquery, so it is never folded at plan time
    ") SELECT CASE WHEN (SELECT count(*) FROM states) = %(n_states)s THEN 0 ELSE CAST(",
    "%(stale_states)s || (SELECT count(*) FROM states) AS integer) END,",
    " CASE WHEN (SELECT count(*) FROM notes) = %(n_notes)s AND (SELECT count(*) FROM updated)"
    " + (SELECT count(*) FROM opened) = %(n_intervals)s THEN 0 ELSE CAST(",
    "%(stale_rows)s || (SELECT count(*) FROM notes) || ' outbox, ' ||"
    " (SELECT count(*) FROM updated) + (SELECT count(*) FROM opened) || ' intervals'"
    " AS integer) END"))


@dataclass(frozen=True)
class _Prepared:
    """One statement prepared on the writer's connection (module docstring, 3): ``execute``
    is the ``EXECUTE`` with the template's pyformat parameters, each cast to its type (as
    in the template: psycopg2 sends ``ARRAY[NULL]`` as ``text[]``)."""

    name: str
    prepare: str
    execute: str


_PARAMETER = re.compile(r"%\((\w+)\)s")


def _prepared(name: str, template: str, types: Mapping[str, str]) -> _Prepared:
    """``template`` (pyformat) as a prepared statement whose parameters have ``types``; the
    name carries a digest of the text, so a changed statement is prepared anew."""
    names = list(dict.fromkeys(_PARAMETER.findall(template)))
    body = _PARAMETER.sub(lambda m: f"${names.index(m.group(1)) + 1}", template)
    name = f"risk_monitor_{name}_{hashlib.sha256(body.encode()).hexdigest()[:12]}"
    return _Prepared(
        name, f"PREPARE {name} ({', '.join(types[n] for n in names)}) AS {body}",
        f"EXECUTE {name} ({', '.join(f'CAST(%({n})s AS {types[n]})' for n in names)})")


_PREPARED_LOCKS = _prepared("change_locks", _LOCKS, {"ns": "integer", "keys": "integer[]"})
_PREPARED_READ = _prepared("change_read", _READ, {
    "fps": "text[]", "limit_ids": "text[]", "scopes": "text[]", "new_ids": "integer",
    "outbox_ids": "integer", "reads": "boolean", "now": "timestamptz"})
_PREPARED_WRITE = _prepared("change_write", _WRITE, {
    "s": "json", "o": "json", "u": "json", "i": "json", "e": "json",
    "l_digest": "text", "l_recorded_at": "timestamptz",
    "l_text": "text", "n_states": "bigint", "n_notes": "bigint", "n_intervals": "bigint",
    "stale_states": "text", "stale_rows": "text"})
_STATEMENTS = (_PREPARED_LOCKS, _PREPARED_READ, _PREPARED_WRITE)
#: ``Connection.info`` key: this DBAPI connection has :data:`_STATEMENTS` (SQLAlchemy clears
#: ``info`` when it replaces the connection)
_PREPARED_KEY = "risk_monitor.alert_change.prepared"


def prepare(conn: Connection) -> None:
    """Prepare the change's statements on ``conn`` once (outside any transaction: a
    prepared statement outlives a rollback). Those there already (a connection handed back
    to the pool and taken again) are kept."""
    if conn.info.get(_PREPARED_KEY):
        return
    there = {name for (name,) in conn.exec_driver_sql(
        "SELECT name FROM pg_prepared_statements WHERE name = ANY(%(names)s)",
        {"names": [s.name for s in _STATEMENTS]})}
    for statement in _STATEMENTS:
        if statement.name not in there:
            conn.exec_driver_sql(statement.prepare)
    conn.info[_PREPARED_KEY] = True


@dataclass(frozen=True)
class ChangeReads:
    """What the read statement returned (module docstring, 1)."""

    states: dict[str, AlertState]
    versions: dict[str, int]
    intervals: dict[tuple[str, str], tuple[int, StatusInterval]]
    new_ids: list[int]
    outbox_ids: list[int]  # reserved for the outbox rows this change may insert
    busy: frozenset[str]  # series with an unfinished outbox row
    present_keys: frozenset[str]  # outbox keys of the series' current (or later) episodes
    roots: dict[tuple[str, int], str]  # (fingerprint, episode) -> first sent delivery ref
    silences: list[Silence]
    acks: list[Acknowledgement]
    head: str


def open_change(conn: Connection, fingerprints: Sequence[str], *,
                results: Sequence[LimitResult], new_intervals: int, new_notifications: int,
                durable: bool, reads_at: datetime | None) -> ChangeReads:
    """Lock the alert and compliance series of ``results`` (then the audit chain) and read
    what planning needs, in one round trip (module docstring, 1). ``new_intervals`` and
    ``new_notifications``: ids to reserve for the intervals and outbox rows this change may
    insert; ``reads_at``: read the delivery's silences
    (active then) and acknowledgements too."""
    series = sorted({advisory_key(f"alert:{fp}") for fp in fingerprints} | {
        advisory_key(f"compliance:{r.limit_id}\x1f{r.scope}") for r in results})
    pairs = sorted({(r.limit_id, r.scope) for r in results})
    prepare(conn)
    sql = "".join((_BEGIN, "" if durable else _ASYNC_COMMIT, _GENERIC_PLANS,
                   _PREPARED_LOCKS.execute, ";\n", _PREPARED_READ.execute))
    read = conn.exec_driver_sql(sql, {
        "ns": ADVISORY_NAMESPACE, "keys": [*series, advisory_key(CHAIN_LOCK)],
        "fps": sorted(set(fingerprints)), "limit_ids": [k[0] for k in pairs],
        "scopes": [k[1] for k in pairs],
        "new_ids": new_intervals, "outbox_ids": new_notifications, "reads": reads_at is not None,
        "now": reads_at or datetime.now(UTC)}).scalar_one()
    (stored, open_intervals, new_ids, outbox_ids, notes, active_silences, series_acks,
     chain_head) = orjson.loads(read)
    states: dict[str, AlertState] = {}
    versions: dict[str, int] = {}
    for raw in stored or ():
        values = _timed(raw, _STATE_TIMES)
        states[values["fingerprint"]] = codec.state_from_row(values)
        versions[values["fingerprint"]] = int(values["version"])
    intervals = {}
    for raw in open_intervals or ():
        values = _timed(raw, _INTERVAL_TIMES)
        values["worst_utilisation"] = _float(values["worst_utilisation"])
        intervals[(raw["limit_id"], raw["scope"])] = (int(raw["id"]), interval_from(values))
    busy: set[str] = set()
    present: set[str] = set()
    roots: dict[tuple[str, int], str] = {}
    for fingerprint, episode, key, status, ref in notes or ():
        if status in ("pending", "sending"):
            busy.add(fingerprint)
        state = states.get(fingerprint)
        if episode >= (state.episode if state is not None else 0):
            present.add(key)
            if status == "sent" and ref is not None:
                roots.setdefault((fingerprint, episode), ref)
    silences = [silence_from_row(_timed(s, ("starts_at", "ends_at", "created_at", "expired_at")))
                for s in active_silences or ()]
    acks = [ack_from_row(_timed(a, ("acked_at",))) for a in series_acks or ()]
    head = chain_head[1] if chain_head is not None else GENESIS_HASH
    return ChangeReads(states, versions, intervals, new_ids, outbox_ids,
                       frozenset(busy),
                       frozenset(present), roots, silences, acks, head)


class ChangeTransaction:
    """The writer's change, planned in memory and written by :meth:`seal` in one statement:
    the interface of ``alert_store.AlertTransaction`` the writer uses, plus the compliance
    steps (``compliance``) and the reads of the delivery (``reads``)."""

    def __init__(self, conn: Connection, reads: ChangeReads, clock: codec.Clock) -> None:
        self.connection = conn
        self.reads = reads
        self.states = dict(reads.states)
        self._versions = dict(reads.versions)
        self._clock = clock
        self._state_rows: dict[str, dict[str, Any]] = {}
        self._outbox: list[dict[str, Any]] = []
        self._open = dict(reads.intervals)  # (limit, scope) -> open interval, as planned
        self._intervals = {i: {"id": i, **_interval_values(interval)}
                           for i, interval in reads.intervals.values()}
        self._stored_ids = set(self._intervals)
        self._touched: set[int] = set()
        self._free_ids = list(reversed(reads.new_ids))
        self._free_outbox_ids = list(reversed(reads.outbox_ids))
        #: outbox rows this transaction inserts (not the duplicates), with their reserved ids
        self.enqueued_rows: list[dict[str, Any]] = []
        #: set by :meth:`seal`, whose message ends with the ``COMMIT``
        self.committed = False
        #: the seal's round trip (write and commit), for the writer's step metrics
        self.write_seconds = 0.0

    def apply(self, states: Sequence[AlertState], notifications: Sequence[Notification],
              *, claim: InsertClaim | None = None) -> ApplyResult:
        """Next states (version-guarded) and outbox rows, written by :meth:`seal`."""
        now = self._clock()
        for state in states:
            fingerprint = state.fingerprint
            version = self._versions.get(fingerprint, 0) + 1
            self._state_rows[fingerprint] = {**codec.state_values(state), "version": version,
                                             "updated_at": now, "audit_hash": None}
            self.states[fingerprint] = state
        rows = outbox_rows(notifications, now, claim=claim)
        new = [r for r in rows if r["idempotency_key"] not in self.reads.present_keys]
        if len(new) > len(self._free_outbox_ids):
            raise ValueError(f"{len(new)} outbox rows, {len(self._free_outbox_ids)} ids "
                             "reserved: reserve one per series changed (open_change)")
        for row in new:  # ascending: the order of insertion
            row["id"] = self._free_outbox_ids.pop()
        self._outbox += new
        self.enqueued_rows += new
        return ApplyResult(len(states), len(new), len(notifications) - len(new))

    def compliance(self, steps: Sequence[Sequence[LimitResult]]) -> list[dict[str, Any]]:
        """The timeline steps, in order (each sees the one before); returns the rows whose
        audited columns changed, as written (to seal), like ``compliance_store.write_step``."""
        written: list[dict[str, Any]] = []
        for results in steps:
            step = timeline_step(self._open, results)
            touched: list[int] = []
            for update in step.updates:
                interval_id = update["interval_id"]
                self._intervals[interval_id].update(
                    {k.removeprefix("new_"): v for k, v in update.items() if k != "interval_id"})
                touched.append(interval_id)
            new = [{"id": self._free_ids.pop(), **row} for row in step.new]
            for row in new:
                self._intervals[row["id"]] = dict(row)
                touched.append(row["id"])
            for interval_id in touched:  # the open interval of each series, as planned
                row = self._intervals[interval_id]
                key = (row["limit_id"], row["scope"])
                if row["until"] is None:
                    self._open[key] = (interval_id, interval_from(row))
                elif self._open.get(key, (None,))[0] == interval_id:
                    del self._open[key]
            self._touched.update(touched)
            written += step.written + new
        return written

    def seal(self, *, before: Mapping[str, AlertState], states: Sequence[AlertState],
             notifications: Sequence[Notification], context: Mapping[str, Any],
             at: datetime, extra: Sequence[Seal] = (),
             before_write: Callable[[], object] | None = None) -> int:
        """Seal and write everything in one statement and commit in the same message (module
        docstring, 2); returns the audit entries written. ``before_write`` is called right
        before the message is sent (the caller's work for the round trip's wait)."""
        lineage = audit_hooks.input_versions_row(self.connection, notifications=notifications,
                                                 context=context, at=at)
        seals = [*audit_hooks.alert_seals(before=before, states=states,
                                          enqueued=self.enqueued_rows,
                                          notifications=notifications, context=context),
                 *extra]
        entries, hashes = chain_entries(self.reads.head, seals, at=at)
        for fingerprint, sealed in hashes.get("alert_states", {}).items():
            self._state_rows[fingerprint]["audit_hash"] = sealed
        outbox_hashes = hashes.get("outbox", {})
        for row in self._outbox:
            row["audit_hash"] = outbox_hashes.get(row["idempotency_key"])
        sealed_intervals = hashes.get("compliance_intervals", {})
        rows = [{**self._intervals[i], "audit_hash": sealed_intervals.get(i)}
                for i in sorted(self._touched)]
        updates = [r for r in rows if r["id"] in self._stored_ids]
        inserts = [r for r in rows if r["id"] not in self._stored_ids]
        params = {
            "s": _document(_STATE_COLUMNS, list(self._state_rows.values())),
            "o": _document(_OUTBOX_COLUMNS, self._outbox),
            "u": _document(_INTERVAL_COLUMNS, updates),
            "i": _document(_INTERVAL_COLUMNS, inserts),
            "e": _document(_ENTRY_COLUMNS, entries),
            "l_digest": lineage.digest if lineage is not None else None,
            "l_recorded_at": _checked(lineage.recorded_at) if lineage is not None else None,
            "l_text": lineage.text if lineage is not None else None,
            "n_states": len(self._state_rows), "n_notes": len(self._outbox),
            "n_intervals": len(rows), "stale_states": _STALE_STATES, "stale_rows": _STALE_ROWS,
        }
        if before_write is not None:
            before_write()
        sent = time.perf_counter()
        try:
            self.connection.exec_driver_sql(
                f"{_PREPARED_WRITE.execute};\n{_COMMIT}", params)
            self.write_seconds = time.perf_counter() - sent
        except DBAPIError as exc:
            found = str(exc.orig)
            if _STALE_STATES in found:
                raise StorageIntegrityError(
                    f"alert states changed under a lock ({found}): a writer bypassed "
                    "AlertStore.locked", source=SOURCE) from exc
            if _STALE_ROWS in found:
                raise StorageIntegrityError(
                    f"outbox or compliance rows changed under the series locks ({found})",
                    source=SOURCE) from exc
            raise
        self.committed = True
        if lineage is not None:
            lineage.committed()
        return len(entries)


def _document(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """One table's rows as the JSON document its ``json_to_recordset`` reads
    (``json_rows.records``: times checked aware, floats as psycopg2 sends them; a ``jsonb``
    payload nested, which ``jsonb`` stores as the value, not the text: the same rows as
    its text cast)."""
    times, floats = _checked_columns(tuple(columns))
    return json_rows.records(rows, columns, times=times, floats=floats)


@functools.cache
def _checked_columns(columns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The time and the float columns of a table (``_document``)."""
    return (tuple(c for c in columns if c in _TIMES), tuple(c for c in columns if c in _FLOATS))


def _checked(value: Any) -> Any:
    """A time bound as is: aware (psycopg2 sends its offset), never naive."""
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC times")
    return value


def _timed(raw: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A row read as JSON with its timestamps parsed back (aware, UTC)."""
    values = dict(raw)
    for name in names:
        text = values.get(name)
        values[name] = None if text is None else datetime.fromisoformat(text).astimezone(UTC)
    return values


def _interval_values(interval: StatusInterval) -> dict[str, Any]:
    return {"limit_id": interval.limit_id, "scope": interval.scope,
            "status": interval.status.value, "since": interval.since, "until": interval.until,
            "last_seen_at": interval.last_seen_at,
            "worst_utilisation": interval.worst_utilisation,
            "config_version": interval.config_version}


def _float(value: Any) -> float | None:
    """A float read as JSON (PostgreSQL writes NaN and infinities as strings)."""
    return None if value is None else float(value)
