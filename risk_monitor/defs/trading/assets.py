"""Trading-flow assets: realised P&L from the desk's fills, and reconciliation breaks between
the desk's book, the exchanges' and the custodian's. Thin: adapters read, ``trading_flow``
and the domain decide; breaks raise ``reconciliation`` alerts through the alert store."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from risk_monitor.application import trading_flow
from risk_monitor.defs.failures import surface_errors
from risk_monitor.defs.metadata import OWNERS, asset_code_version, md_table, utc_now
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.retries import STEP_RETRY
from risk_monitor.defs.risk.resources import RiskStoreResource
from risk_monitor.defs.risk_support import alert_context
from risk_monitor.domain.model import Collected

CODE_VERSION = asset_code_version(__name__)
GROUP = "trading"
BREAK_COLUMNS = ("venue", "item", "kind", "book", "desk", "reported", "difference",
                 "tolerance", "status", "reason")
PNL_COLUMNS = ("venue", "account", "instrument", "fills", "position", "avg_entry", "gross",
               "fees", "funding", "net", "venue_reported", "difference", "matches")

RECONCILIATION_CHECKS = [dg.AssetCheckSpec(
    "books_agree", asset="reconciliation_breaks", blocking=False,
    description="The desk's expected book equals the exchanges' positions and the custodian's "
                "balances within tolerance, and every venue reported. A failure lists each "
                "break (for example a fill the desk did not book).")]
PNL_CHECKS = [dg.AssetCheckSpec(
    "realised_matches_venue", asset="realised_pnl", blocking=False,
    description="Realised P&L rebuilt from the fills equals what the venue reports per fill, "
                "within tolerance.")]


@dg.asset(group_name=GROUP, kinds={"redis", "pandas"}, owners=OWNERS,
          check_specs=RECONCILIATION_CHECKS, code_version=CODE_VERSION,
          retry_policy=STEP_RETRY)
@surface_errors("reconciliation")
def reconciliation_breaks(context: dg.AssetExecutionContext, settings: SettingsResource,
                          risk_store: RiskStoreResource, exchange_positions: Collected,
                          exchange_balances: Collected,
                          custodian_balances: Collected) -> Iterator[Any]:
    """Every (venue, item) of the three books compared; breaks raise reconciliation alerts."""
    cfg = settings.load()
    desk = _desk_book(cfg)
    outcome = trading_flow.reconcile_books(cfg, desk, exchange_positions, exchange_balances,
                                           custodian_balances)
    storage = risk_store.storage(cfg)
    lineage = alert_context(context, cfg, ("exchange_positions", "exchange_balances",
                                           "custodian_balances"), "reconciliation")
    raised = trading_flow.raise_reconciliation_alerts(storage, cfg, outcome, now=utc_now(),
                                                      context=lineage)
    table = pd.DataFrame([b.as_dict() for b in outcome.breaks], columns=list(BREAK_COLUMNS))
    yield dg.Output(table, metadata={
        "desk_book_published": outcome.desk_published, "breaks": len(outcome.broken),
        "unknown": len(outcome.unknown), "compared": len(outcome.breaks),
        "alerts_enqueued": raised, "table": dg.MetadataValue.md(md_table(table.head(50)))})
    problems = [b.as_dict() for b in outcome.broken + outcome.unknown]
    yield dg.AssetCheckResult(
        check_name="books_agree", asset_key="reconciliation_breaks",
        passed=outcome.desk_published and not problems,
        severity=dg.AssetCheckSeverity.ERROR if outcome.broken else dg.AssetCheckSeverity.WARN,
        description=None if outcome.desk_published else "no desk book published: nothing "
                                                        "to reconcile against",
        metadata={"breaks": dg.MetadataValue.json(problems[:50])})


@dg.asset(group_name=GROUP, kinds={"ccxt", "pandas"}, owners=OWNERS, check_specs=PNL_CHECKS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("realised_pnl")
def realised_pnl(context: dg.AssetExecutionContext, settings: SettingsResource,
                 exchange_positions: Collected) -> Iterator[Any]:
    """Realised P&L per instrument rebuilt from today's fills (fees, funding) beside the
    venue's own per-fill figure."""
    from datetime import UTC, datetime

    from risk_monitor.adapters.ccxt_trades import CcxtTradeHistory

    cfg = settings.load()
    now = utc_now()
    since = datetime(now.year, now.month, now.day, tzinfo=UTC)
    fills, funding = [], []
    for venue in cfg.venues:
        history = CcxtTradeHistory(venue)
        fills += history.fetch_fills(venue.symbols, since)
        funding += history.fetch_funding(venue.symbols, since)
    frame = exchange_positions.frame
    current: dict[tuple[str, str, str], float] = {}
    for venue_id, account, instrument, qty in zip(frame["venue"], frame["account"],
                                                  frame["instrument"], frame["quantity"],
                                                  strict=True):
        key = (str(venue_id), str(account), str(instrument))
        current[key] = current.get(key, 0.0) + float(qty)
    books, checks = trading_flow.realised_checks(cfg, fills, funding, current=current)
    by_key = {c.key: c for c in checks}
    rows = []
    for key, book in sorted(books.items()):
        check = by_key.get(key)
        rows.append({"venue": key[0], "account": key[1], "instrument": key[2],
                     "fills": book.fills, "position": book.position,
                     "avg_entry": book.avg_entry, "gross": book.gross, "fees": book.fees,
                     "funding": book.funding, "net": book.net,
                     "venue_reported": check.reported if check else None,
                     "difference": check.difference if check else None,
                     "matches": check.ok if check else None})
    table = pd.DataFrame(rows, columns=list(PNL_COLUMNS))
    mismatches = [c for c in checks if c.ok is False]
    yield dg.Output(table, metadata={
        "fills": len(fills), "funding_payments": len(funding),
        "not_comparable": dg.MetadataValue.json(
            [{"key": list(c.key), "reason": c.reason} for c in checks if c.ok is None]),
        "net_realised": float(table["net"].sum()) if len(table) else 0.0,
        "table": dg.MetadataValue.md(md_table(table))})
    yield dg.AssetCheckResult(
        check_name="realised_matches_venue",
        asset_key="realised_pnl", passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"mismatches": dg.MetadataValue.json(
            [{"key": list(c.key), "reason": c.reason} for c in mismatches])})


def _desk_book(cfg: Any) -> Any:
    if not cfg.redis_url:
        return None
    from risk_monitor.adapters.redis_desk_book import read_desk_book
    from risk_monitor.adapters.redis_registry import connect

    client = connect(cfg.redis_url)
    try:
        return read_desk_book(client, cfg.trading.desk_book_key)
    finally:
        client.close()
