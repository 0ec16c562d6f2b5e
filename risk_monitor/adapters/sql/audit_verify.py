"""``risk-monitor audit verify``: walk the hash chain, check every sealed row, compare anchors.

Three checks, each naming the entry it found broken and the alert it concerns:

* **chain**: every entry's hash matches its canonical content, and its ``prev_hash`` is the
  hash of the entry before it. An edited entry fails the first test; a deleted or inserted one
  breaks the link of the entry after it.
* **coverage**: every row of a covered table (alert states, outbox notifications, compliance
  intervals, limit configuration versions) carries the hash of the last entry that sealed it,
  and its audited columns still have that entry's digest. A row edited, deleted or inserted
  outside the application fails here.
* **lineage**: every hot-path evaluation's input versions row (``evaluation_lineage``) still
  hashes to its digest, which the alert entries sealed; a row named by an entry must exist, and
  a row no entry names was inserted outside the application.
* **anchors**: an attacker who rewrites the whole chain consistently passes both checks, but
  not the heads recorded outside the database (Dagster run metadata, an anchors file): the entry
  an anchor names must still have the hash the anchor saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from risk_monitor.adapters.sql.audit_lineage import DIGEST_KEY
from risk_monitor.adapters.sql.audit_log import COVERAGE, ChainHead, content_hash
from risk_monitor.adapters.sql.engine import read_only
from risk_monitor.adapters.sql.schema import audit_log, evaluation_lineage
from risk_monitor.domain.audit_chain import GENESIS_HASH, versions_digest

SOURCE = "audit_verify"


@dataclass(frozen=True)
class Anchor:
    """A chain head seen from outside the database."""

    head_id: int
    head_hash: str
    source: str
    at: datetime | None = None


@dataclass(frozen=True)
class Finding:
    check: str  # chain | coverage | lineage | anchor
    entry_id: int | None
    subject: str | None
    problem: str
    alert: str | None = None  # the alert (or limit series) concerned, when there is one

    def describe(self) -> str:
        where = f"entry {self.entry_id}" if self.entry_id is not None else "no entry"
        subject = f" ({self.subject})" if self.subject else ""
        alert = f"; affected alert: {self.alert}" if self.alert else ""
        return f"[{self.check}] {where}{subject}: {self.problem}{alert}"


@dataclass
class VerifyReport:
    entries: int = 0
    legacy_entries: int = 0  # written before the chain existed (NULL hashes, a prefix only)
    rows_checked: int = 0
    anchors_checked: int = 0
    head: ChainHead = field(default_factory=lambda: ChainHead(0, GENESIS_HASH))
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        """The first broken entry in chain order (findings without an entry last)."""
        return min(self.findings, key=lambda f: (f.entry_id is None, f.entry_id or 0),
                   default=None)


@dataclass(frozen=True)
class _Seal:
    entry_id: int
    entry_hash: str
    digest: str | None
    alert: str | None


def _alert_of_entry(correlation_id: str | None, payload: Mapping[str, Any]) -> str | None:
    parts = [str(payload[k]) for k in ("limit_id", "scope") if payload.get(k)]
    if payload.get("fingerprint"):
        parts.append(f"fingerprint {payload['fingerprint']}")
    if correlation_id:
        parts.append(f"correlation {correlation_id}")
    return " ".join(parts) or None


def _alert_of_row(table: str, row: Mapping[str, Any]) -> str | None:
    if table in ("alert_states", "outbox"):
        return (f"{row['limit_id']} {row['scope']} fingerprint {row['fingerprint']} "
                f"correlation {row['correlation_id']}")
    if table == "compliance_intervals":
        return f"{row['limit_id']} {row['scope']} (compliance interval {row['id']})"
    return None


def verify(engine: Engine, anchors: Sequence[Anchor] = ()) -> VerifyReport:
    """Run the three checks (module docstring) in one read transaction."""
    report = VerifyReport()
    hashes: dict[int, str] = {}
    seals: dict[str, _Seal] = {}
    named: dict[str, _Seal] = {}  # lineage digest -> the first entry that sealed it
    with read_only(engine, source=SOURCE) as conn:
        prev = GENESIS_HASH
        chained = False
        rows = conn.execution_options(yield_per=2000).execute(
            sa.select(audit_log).order_by(audit_log.c.id))
        for raw in rows:
            r = raw._mapping
            report.entries += 1
            alert = _alert_of_entry(r["correlation_id"], r["payload"] or {})
            if r["entry_hash"] is None:
                if chained:
                    report.findings.append(Finding(
                        "chain", r["id"], r["subject"],
                        "entry has no hash: inserted outside the application", alert))
                else:
                    report.legacy_entries += 1
                continue
            chained = True
            if r["prev_hash"] != prev:
                report.findings.append(Finding(
                    "chain", r["id"], r["subject"],
                    f"link broken: prev_hash {str(r['prev_hash'])[:16]}… but the entry before "
                    f"it hashes to {prev[:16]}… (an entry was deleted or inserted before it)",
                    alert))
            computed = content_hash(str(r["prev_hash"]), r["at"], r["event"],
                                    r["correlation_id"], r["run_id"], r["subject"],
                                    r["row_digest"], r["payload"])
            if computed != r["entry_hash"]:
                report.findings.append(Finding(
                    "chain", r["id"], r["subject"],
                    f"content does not match its hash: the {r['event']} entry was edited",
                    alert))
            prev = r["entry_hash"]
            hashes[r["id"]] = prev
            report.head = ChainHead(r["id"], prev)
            if r["subject"]:
                seals[r["subject"]] = _Seal(r["id"], prev, r["row_digest"], alert)
            digest = (r["payload"] or {}).get(DIGEST_KEY)
            if digest and str(digest) not in named:
                named[str(digest)] = _Seal(r["id"], prev, str(digest), alert)
        _check_coverage(conn, seals, report)
        _check_lineage(conn, named, report)
    _check_anchors(anchors, hashes, report)
    return report


def _check_coverage(conn: sa.Connection, seals: dict[str, _Seal], report: VerifyReport) -> None:
    for name, coverage in COVERAGE.items():
        present: set[str] = set()
        for raw in conn.execute(sa.select(coverage.table)):
            row = dict(raw._mapping)
            report.rows_checked += 1
            subject = coverage.subject(row[coverage.key])
            present.add(subject)
            seal = seals.get(subject)
            alert = _alert_of_row(name, row)
            if seal is None:
                report.findings.append(Finding(
                    "coverage", None, subject,
                    "row is sealed by no audit entry: inserted outside the application",
                    alert))
            elif row["audit_hash"] != seal.entry_hash:
                report.findings.append(Finding(
                    "coverage", seal.entry_id, subject,
                    "row does not carry the hash of its last seal (its seal or the row was "
                    "replaced outside the application)", alert or seal.alert))
            elif coverage.digest(row) != seal.digest:
                report.findings.append(Finding(
                    "coverage", seal.entry_id, subject,
                    "row edited outside the application: its audited columns differ from "
                    "what this entry sealed", alert or seal.alert))
        for subject, seal in seals.items():
            if subject.startswith(f"{name}:") and subject not in present:
                report.findings.append(Finding(
                    "coverage", seal.entry_id, subject,
                    "row deleted outside the application (this entry sealed it last)",
                    seal.alert))


def _check_lineage(conn: sa.Connection, named: Mapping[str, _Seal],
                   report: VerifyReport) -> None:
    present: set[str] = set()
    rows = conn.execution_options(yield_per=500).execute(
        sa.select(evaluation_lineage.c.digest, evaluation_lineage.c.versions))
    for digest, versions in rows:
        report.rows_checked += 1
        present.add(digest)
        subject = f"evaluation_lineage:{digest}"
        seal = named.get(digest)
        if seal is None:
            report.findings.append(Finding(
                "lineage", None, subject,
                "input versions row named by no audit entry: inserted outside the application"))
        elif versions_digest(versions or {}) != digest:
            report.findings.append(Finding(
                "lineage", seal.entry_id, subject,
                "input data versions edited outside the application: they no longer hash to "
                "the digest this entry sealed", seal.alert))
    for digest, seal in named.items():
        if digest not in present:
            report.findings.append(Finding(
                "lineage", seal.entry_id, f"evaluation_lineage:{digest}",
                "input versions row deleted outside the application (this entry names it)",
                seal.alert))


def _check_anchors(anchors: Sequence[Anchor], hashes: Mapping[int, str],
                   report: VerifyReport) -> None:
    for anchor in anchors:
        report.anchors_checked += 1
        seen = f"{anchor.source}" + (f" at {anchor.at.isoformat()}" if anchor.at else "")
        stored = hashes.get(anchor.head_id)
        if stored is None:
            report.findings.append(Finding(
                "anchor", anchor.head_id, None,
                f"anchor from {seen} names entry {anchor.head_id} with hash "
                f"{anchor.head_hash[:16]}…, which the chain no longer holds "
                "(truncated or rewritten)"))
        elif stored != anchor.head_hash:
            report.findings.append(Finding(
                "anchor", anchor.head_id, None,
                f"chain rewritten: anchor from {seen} saw hash {anchor.head_hash[:16]}…, "
                f"the store has {stored[:16]}…"))
