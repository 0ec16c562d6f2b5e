"""Which sources failed, went stale, or never reported: the input to fail-closed evaluation.

A venue that failed has no rows, so its absence must be remembered explicitly; every limit whose
scope could include that venue's data becomes UNKNOWN with a reason naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from risk_monitor.domain.model import SourceKind, SourceStatus
from risk_monitor.domain.valuation import Freshness, ns_of


@dataclass(frozen=True)
class SourceProblem:
    """A source whose data cannot be trusted (failed, stale or missing altogether)."""

    kind: SourceKind | None  # None: an expected venue that no source reported at all
    venue: str
    account: str | None  # None: the whole venue
    reason: str
    as_of: datetime | None  # when the failing attempt finished
    stale_age_s: float | None = None  # set when the source answered, only too long ago
    dataset: str | None = None  # "positions" / "balances": only that dataset is missing
    instrument: str | None = None  # one bad row: only this instrument is missing
    asset: str | None = None  # one bad row: only this asset is missing

    @property
    def affects_positions(self) -> bool:
        return self.kind in (SourceKind.EXCHANGE, None) and self.dataset != "balances"

    @property
    def affects_balances(self) -> bool:
        return (self.kind in (SourceKind.EXCHANGE, SourceKind.CUSTODIAN, None)
                and self.dataset != "positions")

    @property
    def affects_equity(self) -> bool:
        """Account equity = balances + unrealised P&L: either dataset missing blinds it."""
        return self.kind in (SourceKind.EXCHANGE, SourceKind.CUSTODIAN, None)

    def covers(self, instrument: str | None, asset: str | None) -> bool:
        """Could the missing row(s) fall inside a scope restricted to (instrument, asset)?"""
        if instrument is not None and self.instrument is not None and instrument != self.instrument:
            return False
        return asset is None or self.asset is None or asset == self.asset

    def matches(self, venue: str | None, account: str | None) -> bool:
        """Could data of this source fall inside a scope restricted to (venue, account)?"""
        if venue is not None and venue != self.venue:
            return False
        return account is None or self.account is None or account == self.account


#: the account of a source that covers a whole venue (a custodian workspace, a venue's quotes)
ALL_ACCOUNTS = "*"


def _account_of(status: SourceStatus) -> str | None:
    return None if status.account in (ALL_ACCOUNTS, "") else status.account


def _problem(status: SourceStatus, what: str, **detail: Any) -> SourceProblem:
    return SourceProblem(status.kind, status.venue, _account_of(status),
                         f"{status.venue}: source {status.key} {what}", status.as_of, **detail)


def merge_sources(*groups: Iterable[SourceStatus]) -> list[SourceStatus]:
    """One status per source key; a failure anywhere wins over a success elsewhere."""
    merged: dict[str, SourceStatus] = {}
    for group in groups:
        for status in group:
            seen = merged.get(status.key)
            if seen is None or (seen.ok and not status.ok):
                merged[status.key] = status
            elif not seen.ok and not status.ok and seen.dataset != status.dataset:
                merged[status.key] = replace(seen, dataset=None)  # both datasets failed
            elif seen.ok == status.ok and status.as_of < seen.as_of:
                merged[status.key] = status  # the older of two equal reports is the honest one
    return list(merged.values())


def source_budget(kind: SourceKind | str, budgets: Mapping[SourceKind, float] | None,
                  default_s: float) -> float:
    """The freshness budget of a kind of source (``market_data.*max_age_s``), else the default."""
    try:
        return (budgets or {}).get(SourceKind(kind), default_s)
    except ValueError:
        return default_s


def source_is_stale(kind: SourceKind | str, ok: bool, age_s: float,
                    budgets: Mapping[SourceKind, float] | None, default_s: float) -> bool:
    """The one staleness rule of a source: failed, or older than its kind's budget."""
    return (not ok) or age_s > source_budget(kind, budgets, default_s)


def source_problems(
    sources: Iterable[SourceStatus], freshness: Freshness, expected_venues: Iterable[str] = (),
    budgets: Mapping[SourceKind, float] | None = None,
) -> list[SourceProblem]:
    """Failed sources, sources whose last attempt is older than their kind's budget
    (``budgets``, else ``freshness.max_age_s``), expected venues without any source."""
    problems: list[SourceProblem] = []
    seen_venues: set[str] = set()
    for status in sources:
        seen_venues.add(status.venue)
        if not status.ok:
            code = f"{status.error_code}: " if status.error_code else ""
            problems.append(_problem(status, f"failed ({code}{status.error or 'no detail'})",
                                     dataset=status.dataset, instrument=status.instrument,
                                     asset=status.asset))
            continue
        age = freshness.age_s(ns_of(status.as_of))
        budget = source_budget(status.kind, budgets, freshness.max_age_s)
        if source_is_stale(status.kind, True, age, budgets, freshness.max_age_s):
            problems.append(_problem(status, f"is stale ({age:.0f}s > {budget:.0f}s)",
                                     stale_age_s=age))
        elif age < -freshness.max_future_skew_s:
            problems.append(_problem(
                status, f"reports a time {-age:.0f}s in the future (clock skew)"))
    for venue in sorted(set(expected_venues) - seen_venues):
        problems.append(
            SourceProblem(None, venue, None, f"{venue}: no data source reported (blind)", None))
    return problems

