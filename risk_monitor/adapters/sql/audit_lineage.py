"""The input data versions of hot-path evaluations, stored once per evaluation.

An alerting evaluation's versions (every input, per venue) are the bulk of its lineage. Sealing
them inside every alert entry made each hot-path alert hash and store them again; instead the
alert entries seal only their digest (``lineage_digest``, ``domain.audit_chain.versions_digest``)
and the versions are written here once, in the same transaction as the first alert that names
them. The table is content-addressed and append-only (trigger, and no UPDATE/DELETE for the
application's role), and ``audit verify`` recomputes every row's digest: an edited, deleted or
forged row is caught like a covered row (``audit_verify.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from risk_monitor.adapters.sql.schema import evaluation_lineage

#: payload key of the digest an alert entry seals in place of the versions themselves
DIGEST_KEY = "lineage_digest"
#: context / payload key of the versions (Dagster-path entries keep them inline)
VERSIONS_KEY = "input_data_versions"

#: the one insert, built once per dialect: executed with parameters, SQLAlchemy reuses its
#: compiled form, where ``insert(...).values(...)`` built per call cost ~0.15 ms CPU more
_INSERT = {name: dialect.insert(evaluation_lineage).on_conflict_do_nothing()
           for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}
#: how SQLAlchemy's JSON type encodes the versions (its default serialiser: ``json.dumps``)
_ENCODER = json.JSONEncoder()


@dataclass(frozen=True)
class PendingRow:
    """An evaluation's versions to store in the alert transaction: written by the audit seal's
    own statement on PostgreSQL (``audit_log.seal_batch``: no round trip of its own), else by
    :func:`write`. ``text``: the versions as JSON, encoded once here."""

    digest: str
    recorded_at: datetime
    versions: dict[str, Any]
    text: str
    stored_in: set[int] | None
    store: int

    def settle(self, inserted: int) -> None:
        """After the insert: nothing inserted means an earlier transaction committed the row
        (PostgreSQL waits for a concurrent inserter, SQLite serialises writers), so it is
        there for good (append-only): the evaluation's later alerts skip it."""
        if inserted == 0:
            self.committed()

    def committed(self) -> None:
        """After the transaction that inserted it (or found it) committed: there for good
        (append-only), the evaluation's later alerts skip it."""
        if self.stored_in is not None:
            self.stored_in.add(self.store)


def pending(conn: Connection, digest: str, versions: Mapping[str, Any], *,
            at: datetime) -> PendingRow | None:
    """The row storing an evaluation's versions under their digest in ``conn``'s transaction,
    once; ``None`` when it is known stored already.

    A later alert of the same evaluation finds the row and leaves it alone (``ON CONFLICT DO
    NOTHING``); once a transaction has seen it committed (the insert did nothing), a
    ``LineageDigest`` remembers that for its own lifetime (one evaluation's context) and its
    further alerts write nothing. No cache outlives the context: a store restored or emptied
    meanwhile gets the row again.
    """
    stored_in: set[int] | None = getattr(digest, "stored_in", None)
    store = id(conn.engine)
    if stored_in is not None and store in stored_in:
        return None
    body = dict(versions)
    return PendingRow(str(digest), at, body, _ENCODER.encode(body), stored_in, store)


def write(conn: Connection, row: PendingRow) -> None:
    """Store ``row`` by a statement of its own."""
    statement = _INSERT["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    row.settle(conn.execute(statement, {"digest": row.digest, "recorded_at": row.recorded_at,
                                        "versions": row.versions}).rowcount)


def lineage_cte() -> Any:
    """The insert of :func:`write` as a data-modifying CTE of the seal's statement
    (PostgreSQL), the versions bound as :attr:`PendingRow.text` (``l_*`` parameters): its
    rows are what it inserted."""
    return (postgresql.insert(evaluation_lineage)
            .values(digest=sa.bindparam("l_digest"),
                    recorded_at=sa.bindparam("l_recorded_at",
                                             type_=evaluation_lineage.c.recorded_at.type),
                    versions=sa.cast(sa.bindparam("l_text", type_=sa.Text()),
                                     postgresql.JSONB()))
            .on_conflict_do_nothing()
            .returning(evaluation_lineage.c.digest)
            .cte("lineage_row"))


def cte_params(row: PendingRow) -> dict[str, Any]:
    return {"l_digest": row.digest, "l_recorded_at": row.recorded_at, "l_text": row.text}


def read(conn: Connection, digests: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored versions of each digest found (missing digests are left out)."""
    wanted = sorted(set(digests))
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), 500):
        rows = conn.execute(sa.select(evaluation_lineage.c.digest, evaluation_lineage.c.versions)
                            .where(evaluation_lineage.c.digest.in_(wanted[start:start + 500])))
        found.update({str(d): dict(v) for d, v in rows})
    return found


def expand(conn: Connection, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Payloads as a reader wants them: an entry that sealed a digest also shows the versions
    stored under it (``input_data_versions``); what was sealed is unchanged in the store."""
    digests = {str(p[DIGEST_KEY]) for p in payloads
               if p.get(DIGEST_KEY) and VERSIONS_KEY not in p}
    if not digests:
        return payloads
    stored = read(conn, digests)
    return [{**p, VERSIONS_KEY: stored.get(str(p[DIGEST_KEY]))}
            if p.get(DIGEST_KEY) and VERSIONS_KEY not in p else p for p in payloads]
