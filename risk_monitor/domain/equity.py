"""Equity per exchange account and custodian vault: the table the portfolio equity sums
(:func:`risk_monitor.domain.pnl.portfolio_pnl`).

Equity = Σ balances in USD + Σ unrealized P&L of the positions (an exchange balance's
``total`` excludes unrealized P&L; docs/risk-math.md). Every source gets a row, a failed one
with NaN equity and the failure as reason: a blind venue never reads as an account worth zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from risk_monitor.domain.coverage import SourceProblem
from risk_monitor.domain.model import SourceKind, SourceStatus
from risk_monitor.domain.valuation import NAT, min_ns

#: Columns of :func:`equity_table`'s frame: one row per exchange account / custodian vault.
EQUITY_COLUMNS: tuple[str, ...] = (
    "source_type",
    "venue",
    "account",
    "balances_usd",
    "unrealized_pnl_usd",
    "equity_usd",
    "realized_pnl_usd",
    "positions",
    "ok",
    "reason",
    "source_time",
)


def equity_table(
    positions_by_account: Iterable[Mapping[str, Any]],
    balances_by_account: Iterable[Mapping[str, Any]],
    sources: Sequence[SourceStatus],
    problems: Sequence[SourceProblem],
) -> pd.DataFrame:
    """Equity per exchange account and custodian vault, incl. sources that delivered nothing.

    Inputs are per-account sums (``aggregation.positions_by_account`` /
    ``balances_by_account``). A failed source gets a row with NaN equity
    and the failure as reason, so a table never shows a blind venue as an account worth zero.
    """
    keys: dict[tuple[str, str, str], dict[str, Any]] = {}

    def row(source_type: str, venue: str, account: str) -> dict[str, Any]:
        key = (source_type, venue, account)
        if key not in keys:
            keys[key] = {
                "source_type": source_type, "venue": venue, "account": account,
                "balances_usd": 0.0, "unrealized_pnl_usd": 0.0, "equity_usd": 0.0,
                "realized_pnl_usd": 0.0, "positions": 0, "ok": True, "reason": "",
                "source_time": NAT,
            }
        return keys[key]

    for status in sources:
        if status.kind in (SourceKind.EXCHANGE, SourceKind.CUSTODIAN):
            row(status.kind.value, status.venue, status.account)
    for problem in problems:
        if problem.kind is None:
            row("unknown", problem.venue, "*")

    for b in balances_by_account:
        entry = row(str(b["source_type"]), str(b["venue"]), str(b["account"]))
        entry["balances_usd"] = float(b["value"]) if b["bad"] == 0 else math.nan
        entry["source_time"] = min_ns(int(entry["source_time"]), int(b["oldest_ns"]))
        if b["bad"]:
            _fail(entry, str(b["reason"]))
    for p in positions_by_account:
        entry = row("exchange", str(p["venue"]), str(p["account"]))
        entry["positions"] = int(p["count"])
        entry["unrealized_pnl_usd"] = float(p["upnl"]) if p["bad"] == 0 else math.nan
        entry["realized_pnl_usd"] = float(p["realized"])
        entry["source_time"] = min_ns(int(entry["source_time"]), int(p["oldest_ns"]))
        if p["bad"]:
            _fail(entry, str(p["reason"]))

    for entry in keys.values():
        for problem in problems:
            same_kind = problem.kind is None or problem.kind.value == entry["source_type"]
            if same_kind and problem.matches(str(entry["venue"]), str(entry["account"])):
                _fail(entry, problem.reason)
        entry["equity_usd"] = (
            float(entry["balances_usd"]) + float(entry["unrealized_pnl_usd"])
            if entry["ok"]
            else math.nan
        )
    frame = pd.DataFrame(list(keys.values()), columns=list(EQUITY_COLUMNS))
    frame["source_time"] = pd.to_datetime(frame["source_time"].astype("int64"), utc=True)
    return frame.sort_values(["source_type", "venue", "account"], kind="stable").reset_index(
        drop=True
    )


def _fail(entry: dict[str, Any], reason: str) -> None:
    if entry["ok"]:
        entry["reason"] = reason
    entry["ok"] = False
