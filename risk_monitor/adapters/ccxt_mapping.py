"""ccxt payloads to dataset frames (pure): positions, balances, tickers.

Numbers: ccxt parses venue strings to Python floats; frames hold float64 (see
``domain/schemas.py``). Balance convention: ``total`` is the wallet balance EXCLUDING unrealised
P&L, ``used`` the margin locked in positions and orders (clipped to ``[0, total]``) and
``free = total - used``. ccxt's own ``total`` differs per venue (binanceusdm puts
``marginBalance`` = wallet + uPnL there, okx ``eq`` = equity incl. uPnL), so for those venues we
read the raw ``info`` (binanceusdm ``walletBalance`` / ``initialMargin``; okx ``cashBal`` /
``frozenBal``); other venues use ccxt's unified free / used / total as they come.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from math import isnan
from typing import Any

import pandas as pd

from risk_monitor.adapters.errors import typed_parser
from risk_monitor.domain.schemas import balances_frame, positions_frame, prices_frame

#: pandas' nanosecond timestamps end in 2262; anything later is not a venue clock
MAX_TIMESTAMP_MS = 9.2e15


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _opt(value: Any) -> float | None:
    number = _num(value)
    return None if isnan(number) else number


def _ts(ms: Any, fallback: datetime) -> pd.Timestamp | None:
    """Venue milliseconds -> UTC time; absent or unreadable -> ``fallback``; a number no clock
    can show (infinite, beyond year 2262) -> None, which the schema rejects for that row."""
    if ms is None or isinstance(ms, bool):
        return pd.Timestamp(fallback)
    try:
        number = float(ms)
    except (TypeError, ValueError, OverflowError):
        return pd.Timestamp(fallback)
    if isnan(number):
        return pd.Timestamp(fallback)
    if not math.isfinite(number) or abs(number) >= MAX_TIMESTAMP_MS:
        return None
    value = int(number)
    if value <= 0:
        return pd.Timestamp(fallback)
    return pd.Timestamp(value, unit="ms", tz="UTC")


def _market_codes(symbol: str, markets: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, str]:
    market = markets.get(symbol) or {}
    base = market.get("base")
    quote = market.get("quote")
    settle = market.get("settle")
    if not base or not quote:
        pair, _, rest = symbol.partition(":")
        base, _, quote = pair.partition("/")
        settle = settle or rest.split("-")[0] or quote
    return str(base).upper(), str(quote).upper(), str(settle or quote).upper()


def _position_sign(position: Mapping[str, Any]) -> int:
    info = position.get("info") or {}
    for side in (position.get("side"), info.get("positionSide") or info.get("posSide")):
        if str(side or "").lower() in ("long", "short"):
            return 1 if str(side).lower() == "long" else -1
    raw = _num(info.get("positionAmt", info.get("pos")))
    if not isnan(raw) and raw != 0:
        return 1 if raw > 0 else -1
    return 0


@typed_parser
def map_positions(positions: Iterable[Mapping[str, Any]], *, venue: str, account: str,
                  markets: Mapping[str, Mapping[str, Any]], received_at: datetime
                  ) -> pd.DataFrame:
    """ccxt unified positions -> POSITION_COLUMNS (closed positions dropped).

    ``quantity`` = contracts x contractSize x (+1 long / -1 short), in base units; hedge mode
    yields one row per side. ``timestamp`` is the venue's last update of the position.
    """
    rows: list[dict[str, Any]] = []
    for position in positions:
        contracts = abs(_num(position.get("contracts")))
        if contracts == 0:
            continue  # flat: venues list closed positions with zero size
        symbol = str(position.get("symbol") or "")
        market = markets.get(symbol) or {}
        contract_size = _num(position.get("contractSize") if position.get("contractSize")
                             is not None else market.get("contractSize"))
        sign = _position_sign(position)
        base, quote, settle = _market_codes(symbol, markets)
        mark = _num(position.get("markPrice"))
        quantity = contracts * contract_size * sign if sign else float("nan")
        margin_mode = str(position.get("marginMode") or "").lower()
        rows.append({
            "venue": venue, "account": account, "instrument": symbol,
            "base": base, "quote": quote, "settle": settle,
            "position_side": "long" if sign > 0 else "short" if sign < 0 else "",
            "contracts": contracts, "contract_size": contract_size, "quantity": quantity,
            "entry_price": _num(position.get("entryPrice")), "mark_price": mark,
            "notional": abs(quantity) * mark,
            "unrealized_pnl": _num(position.get("unrealizedPnl")),
            "realized_pnl": _opt(position.get("realizedPnl")),
            "leverage": _opt(position.get("leverage")),
            "liquidation_price": _opt(position.get("liquidationPrice")),
            "margin_mode": margin_mode if margin_mode in ("cross", "isolated") else "",
            "timestamp": _ts(position.get("lastUpdateTimestamp") or position.get("timestamp"),
                             received_at),
            "received_at": pd.Timestamp(received_at),
        })
    return positions_frame(rows)


def _wallet_rows_binance(info: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    assets = info.get("assets") if isinstance(info, Mapping) else None
    if not isinstance(assets, list):
        return None
    rows = []
    for entry in assets:
        if _num(entry.get("updateTime")) == 0:
            continue  # ccxt's rule too: uninitialised assets carry no valid balance
        rows.append({"asset": entry.get("asset"), "wallet": entry.get("walletBalance"),
                     "locked": entry.get("initialMargin"), "time": entry.get("updateTime")})
    return rows


def _wallet_rows_okx(info: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    data = info.get("data") if isinstance(info, Mapping) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
        return None
    first = data[0]
    details = first.get("details")
    if not isinstance(details, list):
        return None
    return [{"asset": d.get("ccy"), "wallet": d.get("cashBal"), "locked": d.get("frozenBal"),
             "time": d.get("uTime") or first.get("uTime")} for d in details]


_WALLET_READERS: dict[str, Callable[[Mapping[str, Any]], list[dict[str, Any]] | None]] = {
    "binanceusdm": _wallet_rows_binance,
    "okx": _wallet_rows_okx,
}


@typed_parser
def map_balance(balance: Mapping[str, Any], *, exchange_id: str, venue: str, account: str,
                received_at: datetime) -> pd.DataFrame:
    """A ccxt balance structure -> BALANCE_COLUMNS (source_type 'exchange'), see module doc.

    All-zero assets are dropped (venues list every asset they support).
    """
    rows: list[dict[str, Any]] = []
    reader = _WALLET_READERS.get(exchange_id)
    wallet = reader(balance.get("info") or {}) if reader else None
    if wallet is not None:
        for entry in wallet:
            total = _num(entry["wallet"])
            locked = _num(entry["locked"])
            used = min(max(locked, 0.0), total) if not isnan(total) and total >= 0 else locked
            if total == 0 and (used == 0 or isnan(used)):
                continue
            rows.append({"asset": entry["asset"], "free": total - used, "used": used,
                         "total": total, "time": entry["time"]})
    else:
        skip = {"info", "timestamp", "datetime", "free", "used", "total", "debt"}
        for code, item in balance.items():
            if code in skip or not isinstance(item, Mapping):
                continue
            free, used, total = _num(item.get("free")), _num(item.get("used")), \
                _num(item.get("total"))
            if isnan(total) and not isnan(free) and not isnan(used):
                total = free + used
            if isnan(used) and not isnan(total) and not isnan(free):
                used = total - free
            if isnan(free) and not isnan(total) and not isnan(used):
                free = total - used
            if (total == 0 or isnan(total)) and (free == 0 and used == 0):
                continue
            rows.append({"asset": code, "free": free, "used": used, "total": total,
                         "time": balance.get("timestamp")})
    return balances_frame(
        {
            "source_type": "exchange", "venue": venue, "account": account,
            "asset": str(row["asset"] or "").upper(),
            "free": row["free"], "used": row["used"], "total": row["total"],
            "timestamp": _ts(row["time"], received_at),
            "received_at": pd.Timestamp(received_at),
        }
        for row in rows
    )


@typed_parser
def map_tickers(tickers: Mapping[str, Mapping[str, Any]], *, venue: str,
                markets: Mapping[str, Mapping[str, Any]], received_at: datetime,
                symbols: Sequence[str] | None = None) -> pd.DataFrame:
    """ccxt unified tickers -> PRICE_COLUMNS; ``mark`` falls back to ``last``.

    A ticker without a timestamp (some venues) is stamped with ``received_at``: its age is then
    our receive time, the best bound we have.
    """
    wanted = set(symbols) if symbols else None
    rows = []
    for symbol, ticker in tickers.items():
        if wanted is not None and symbol not in wanted:
            continue
        base, quote, _ = _market_codes(symbol, markets)
        last = _num(ticker.get("last"))
        if isnan(last):
            last = _num(ticker.get("close"))
        mark = _num(ticker.get("markPrice"))
        rows.append({
            "venue": venue, "instrument": symbol, "base": base, "quote": quote,
            "bid": _opt(ticker.get("bid")), "ask": _opt(ticker.get("ask")), "last": last,
            "mark": last if isnan(mark) else mark,
            "timestamp": _ts(ticker.get("timestamp"), received_at),
            "received_at": pd.Timestamp(received_at),
        })
    return prices_frame(rows)
