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

from collections.abc import Iterable, Mapping
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


def record(conn: Connection, digest: str, versions: Mapping[str, Any], *, at: datetime) -> None:
    """Store an evaluation's versions under their digest in ``conn``'s transaction, once.

    A later alert of the same evaluation finds the row and leaves it alone; once a transaction
    has seen it committed (the insert did nothing), a ``LineageDigest`` remembers that for its
    own lifetime (one evaluation's context) and its further alerts write nothing. No cache
    outlives the context: a store restored or emptied meanwhile gets the row again.
    """
    stored_in: set[int] | None = getattr(digest, "stored_in", None)
    store = id(conn.engine)
    if stored_in is not None and store in stored_in:
        return
    statement = _INSERT["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    inserted = conn.execute(statement, {"digest": str(digest), "recorded_at": at,
                                        "versions": dict(versions)}).rowcount
    # nothing inserted: an earlier transaction committed it (PostgreSQL waits for a concurrent
    # inserter, SQLite serialises writers), so it is there for good (append-only)
    if inserted == 0 and stored_in is not None:
        stored_in.add(store)


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
