"""Small builders for hand-computed domain tests: frames with the model's exact columns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.limits import LimitConfig, load_limit_config
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    PRICE_COLUMNS,
    Collected,
    SourceKind,
    SourceStatus,
)

NOW = datetime(2025, 10, 20, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float, now: datetime = NOW) -> datetime:
    return now - timedelta(seconds=seconds)


def position(
    venue: str,
    instrument: str,
    quantity: float,
    entry: float,
    mark: float,
    *,
    account: str = "main",
    side: str | None = None,
    liquidation: float = float("nan"),
    unrealized: float | None = None,
    realized: float = float("nan"),
    received: datetime = NOW,
    contract_size: float = 1.0,
) -> dict[str, Any]:
    base, rest = instrument.split("/")
    quote, _, settle = rest.partition(":")
    return {
        "venue": venue,
        "account": account,
        "instrument": instrument,
        "base": base,
        "quote": quote,
        "settle": settle or quote,
        "position_side": side or ("long" if quantity >= 0 else "short"),
        "contracts": abs(quantity) / contract_size,
        "contract_size": contract_size,
        "quantity": quantity,
        "entry_price": entry,
        "mark_price": mark,
        "notional": abs(quantity) * mark,
        "unrealized_pnl": (mark - entry) * quantity if unrealized is None else unrealized,
        "realized_pnl": realized,
        "leverage": 10.0,
        "liquidation_price": liquidation,
        "margin_mode": "cross",
        "timestamp": received - timedelta(hours=3),  # venues stamp the last change
        "received_at": received,
    }


def balance(
    venue: str,
    asset: str,
    total: float,
    *,
    account: str = "main",
    source_type: str = "exchange",
    received: datetime = NOW,
) -> dict[str, Any]:
    return {
        "source_type": source_type,
        "venue": venue,
        "account": account,
        "asset": asset,
        "free": total,
        "used": 0.0,
        "total": total,
        "timestamp": received,
        "received_at": received,
    }


def quote(
    venue: str,
    instrument: str,
    last: float,
    *,
    mark: float | None = None,
    at: datetime = NOW,
) -> dict[str, Any]:
    base, rest = instrument.split("/")
    quote_ccy = rest.partition(":")[0]
    return {
        "venue": venue,
        "instrument": instrument,
        "base": base,
        "quote": quote_ccy,
        "bid": last - 0.5,
        "ask": last + 0.5,
        "last": last,
        "mark": last if mark is None else mark,
        "timestamp": at,
        "received_at": at,
    }


def frame(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    rows = list(rows)
    out = pd.DataFrame(rows, columns=list(columns))
    for col in ("timestamp", "received_at"):
        out[col] = pd.to_datetime(out[col], utc=True)
    return out


def source(
    kind: SourceKind, venue: str, account: str = "main", *, ok: bool = True,
    as_of: datetime = NOW, error: str = "connection refused",
) -> SourceStatus:
    return SourceStatus(
        kind=kind, venue=venue, account=account, ok=ok, as_of=as_of,
        error_code=None if ok else "RM201", error=None if ok else error,
    )


def snapshot(
    positions: Iterable[Mapping[str, Any]] = (),
    balances: Iterable[Mapping[str, Any]] = (),
    quotes: Iterable[Mapping[str, Any]] = (),
    *,
    exchanges: Iterable[str] = ("binance", "okx"),
    custodians: Iterable[str] = ("fireblocks",),
    failed: Iterable[str] = (),
    now: datetime = NOW,
    start_of_day_equity: float | None = None,
    peak_equity: float | None = None,
    max_age_s: float = 60.0,
    vaults: Mapping[str, Iterable[str]] | None = None,
) -> RiskSnapshot:
    """A snapshot where every listed venue reported (ok) unless named in ``failed``."""
    failed = set(failed)
    ex_sources = tuple(source(SourceKind.EXCHANGE, v, ok=v not in failed) for v in exchanges)
    vaults = vaults or {}
    cu_sources = tuple(
        source(SourceKind.CUSTODIAN, v, a, ok=v not in failed)
        for v in custodians
        for a in vaults.get(v, ("vault-1",))
    )
    md_sources = tuple(source(SourceKind.MARKET, v, "", ok=v not in failed) for v in exchanges)
    positions = [p for p in positions if p["venue"] not in failed]
    balances = [b for b in balances if b["venue"] not in failed]
    quotes = [q for q in quotes if q["venue"] not in failed]
    return RiskSnapshot(
        positions=Collected(frame(positions, POSITION_COLUMNS), ex_sources),
        balances=Collected(frame(balances, BALANCE_COLUMNS), ex_sources + cu_sources),
        prices=Collected(frame(quotes, PRICE_COLUMNS), md_sources),
        now=now,
        start_of_day_equity=start_of_day_equity,
        peak_equity=peak_equity,
        max_age_s=max_age_s,
        max_future_skew_s=5.0,
    )


def config(*limits: Mapping[str, Any], venues: Iterable[str] = (), **extra: Any) -> LimitConfig:
    return load_limit_config({"venues": list(venues), "limits": list(limits), **extra})


def by_scope(results: Iterable[Any], limit_id: str) -> dict[str, Any]:
    return {r.scope: r for r in results if r.limit_id == limit_id}


# --- the hand-computed desk used across tests (numbers in docs/risk-math.md "Worked example") ---
def desk_positions(received: datetime = NOW) -> list[dict[str, Any]]:
    return [
        position("binance", "BTC/USDT:USDT", 10, 60000, 61000, liquidation=50000, received=received),
        position("binance", "ETH/USDT:USDT", -50, 3000, 2900, received=received),
        position("okx", "BTC/USDT:USDT", -4, 62000, 61000, received=received),
        position("okx", "ETH/USDT:USDT", 20, 2800, 2900, side="long", received=received),
        position("okx", "ETH/USDT:USDT", -20, 3100, 2900, side="short", received=received),
    ]


def desk_balances(received: datetime = NOW) -> list[dict[str, Any]]:
    return [
        balance("binance", "USDT", 500000, received=received),
        balance("okx", "USDT", 300000, received=received),
        balance("okx", "BTC", 1, received=received),
        balance("fireblocks", "BTC", 5, account="vault-1", source_type="custodian", received=received),
        balance("fireblocks", "USDC", 1_000_000, account="vault-1", source_type="custodian",
                received=received),
        balance("fireblocks", "ETH", 100, account="vault-2", source_type="custodian", received=received),
    ]


def desk_quotes(at: datetime = NOW) -> list[dict[str, Any]]:
    return [
        quote("binance", "BTC/USDT:USDT", 61000, at=at),
        quote("binance", "ETH/USDT:USDT", 2900, at=at),
        quote("okx", "BTC/USDT:USDT", 61000, at=at),
        quote("okx", "ETH/USDT:USDT", 2900, at=at),
    ]


def desk(**kwargs: Any) -> RiskSnapshot:
    """binance + okx + fireblocks (vault-1, vault-2); equity 2,481,000 USD."""
    kwargs.setdefault("vaults", {"fireblocks": ("vault-1", "vault-2")})
    return snapshot(desk_positions(), desk_balances(), desk_quotes(), **kwargs)


def result(
    status: str,
    at: datetime,
    *,
    limit_id: str = "btc-notional",
    scope: str = "venue:binance|instrument:BTC/USDT:USDT",
    value: float | None = None,
    utilisation: float | None = None,
    source_event_time: datetime | None = None,
) -> Any:
    from risk_monitor.domain.model import LimitResult, LimitStatus

    st = LimitStatus(status)
    defaults = {"OK": 500000.0, "WARN": 850000.0, "BREACH": 1100000.0, "UNKNOWN": None}
    v = value if value is not None else defaults[status]
    return LimitResult(
        limit_id=limit_id, limit_kind="max_notional", scope=scope, status=st,
        value=v, warn_level=800000.0, breach_level=1000000.0,
        utilisation=utilisation if utilisation is not None else (None if v is None else v / 1e6),
        as_of=at, config_version="v1", reason="" if st is LimitStatus.OK else f"{status} reason",
        source_event_time=source_event_time or at - timedelta(seconds=1),
    )
