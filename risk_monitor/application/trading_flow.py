"""Use cases of the trading flow, shared by the Dagster assets and the service: realised P&L
rebuilt from fills and checked against the venue, and the three-book reconciliation whose
breaks go through the alert store (``reconciliation`` series). Domain and ports only: both
paths raise the same series through the same store, so they agree on every break."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from risk_monitor.application.alerting import alert_policy, raise_alerts
from risk_monitor.application.evaluation import merge_collected
from risk_monitor.domain.model import Collected, SourceKind
from risk_monitor.domain.realised import (
    Fill,
    Funding,
    RealisedCheck,
    RealisedPnl,
    compare_realised,
    realised_pnl,
)
from risk_monitor.domain.reconciliation import (
    Break,
    BreakStatus,
    DeskBook,
    ItemKey,
    Tolerance,
    as_of_by_venue,
    break_results,
    reconcile,
    reported_books,
)
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import RiskStore


@dataclass(frozen=True)
class Reconciliation:
    breaks: list[Break]
    desk_published: bool

    @property
    def broken(self) -> list[Break]:
        return [b for b in self.breaks if b.status is BreakStatus.BREAK]

    @property
    def unknown(self) -> list[Break]:
        return [b for b in self.breaks if b.status is BreakStatus.UNKNOWN]

    @property
    def pending(self) -> list[Break]:
        return [b for b in self.breaks if b.status is BreakStatus.PENDING]


def reconcile_books(settings: Settings, desk: Mapping[ItemKey, float] | DeskBook | None,
                    positions: Collected, exchange_balances: Collected,
                    custody: Collected) -> Reconciliation:
    """Compare the three books as of the same time (no desk book published: nothing to
    compare, said so). Each venue's report is as of its oldest successful read."""
    if desk is None:
        return Reconciliation([], desk_published=False)
    exchange, custodian = reported_books(
        positions.frame, merge_collected(exchange_balances, custody).frame)
    blind = {s.venue for part in (positions, exchange_balances, custody) for s in part.sources
             if not s.ok}
    tolerance = Tolerance(settings.trading.reconciliation_abs_tolerance,
                          settings.trading.reconciliation_rel_tolerance)
    breaks = reconcile(
        desk, exchange, custodian, exchange_venues=[v.id for v in settings.venues],
        custodian_venues=[c.id for c in settings.custodians]
        + [s.venue for s in custody.sources if s.kind is SourceKind.CUSTODIAN],
        blind=blind, default=tolerance, reported_as_of=reported_as_of(
            positions, exchange_balances, custody))
    return Reconciliation(breaks, desk_published=True)


def reported_as_of(positions: Collected, exchange_balances: Collected,
                   custody: Collected) -> dict[tuple[str, str], datetime]:
    """(venue, kind) -> the time the venue's positions or balances report is as of."""
    out: dict[tuple[str, str], datetime] = {
        (venue, "position"): at for venue, at in as_of_by_venue(positions.sources,
                                                                "positions").items()}
    balances = {**as_of_by_venue(exchange_balances.sources, "balances"),
                **as_of_by_venue(custody.sources, "balances", (SourceKind.CUSTODIAN,))}
    out.update({(venue, "balance"): at for venue, at in balances.items()})
    return out


def raise_reconciliation_alerts(storage: RiskStore, settings: Settings, outcome: Reconciliation,
                                *, now: datetime, context: Mapping[str, Any]) -> int:
    """Breaks (and cleared breaks) through the alert store: one series per venue and item."""
    results = break_results(outcome.breaks, as_of=now)
    if not results:
        return 0
    base = alert_policy(settings)
    wait = settings.trading.reconciliation_for_s  # a fill in flight is no break
    policy = replace(base, resolve_missing=False, group_wait_s=max(base.group_wait_s, wait),
                     unknown_for_s=max(base.unknown_for_s, wait))
    raised = raise_alerts(storage, results, now=now, policy=policy, context=context)
    return raised.enqueued


def realised_checks(settings: Settings, fills: Sequence[Fill], funding: Sequence[Funding], *,
                    current: Mapping[tuple[str, str, str], float] | None = None
                    ) -> tuple[dict[tuple[str, str, str], RealisedPnl], list[RealisedCheck]]:
    """Books rebuilt from the window's fills, checked against the venue's per-fill figures.

    ``current``: the venue's positions now. Where the fills do not explain it (a position was
    open before the window), the venue's per-fill figures are measured from an average entry
    the window does not show: that comparison is unknown (``ok`` None, said why), not failed.
    """
    books = realised_pnl(fills, funding)
    checks = compare_realised(books, abs_tolerance=settings.trading.realised_abs_tolerance,
                              rel_tolerance=settings.trading.realised_rel_tolerance)
    if current is not None:
        out = []
        for found in checks:
            book = books.get(found.key)
            held = current.get(found.key, 0.0)
            if book is not None and abs(held - book.position) > 1e-9 * max(1.0, abs(held)):
                found = replace(found, ok=None, reason=(  # noqa: PLW2901
                    f"position {held:g} held now is not explained by the window's fills "
                    f"({book.position:g}): opened before the window"))
            out.append(found)
        checks = out
    return books, checks

