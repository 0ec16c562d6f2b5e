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

import threading
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
_KNOWN_SIZE = 4096


class _Known:
    """Digests seen committed in the store (rows are never deleted): no statement for them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._digests: dict[str, None] = {}
        self._lock = threading.Lock()

    def __contains__(self, digest: object) -> bool:
        return digest in self._digests

    def add(self, digest: str) -> None:
        with self._lock:
            if len(self._digests) >= self.size:
                self._digests.pop(next(iter(self._digests)))
            self._digests[digest] = None


_known = _Known(_KNOWN_SIZE)


def record(conn: Connection, digest: str, versions: Mapping[str, Any], *, at: datetime) -> None:
    """Store an evaluation's versions under their digest in ``conn``'s transaction (once: an
    existing row is left alone, and a digest seen committed costs no statement)."""
    if digest in _known:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(evaluation_lineage).values(
        digest=digest, recorded_at=at, versions=dict(versions)).on_conflict_do_nothing()
    if conn.execute(statement).rowcount == 0:  # committed by an earlier transaction
        _known.add(digest)


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
