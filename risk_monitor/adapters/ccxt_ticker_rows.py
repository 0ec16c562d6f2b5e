"""One bad ticker costs that ticker only: ccxt's bulk ``parse_tickers`` re-done item by item.

ccxt parses a venue's whole ticker list in one call, and one bad value (a ``"NaN"``
``lastPrice``) fails it with a message naming neither the field nor the symbol
(``invalid literal for int() with base 10: 'NaN'``). The adapter then hands the raw answer
ccxt received (``last_json_response``) to :func:`parse_tickers_each`: the good tickers are kept,
each bad one becomes a :class:`RejectedRow` naming its symbol and the non-finite or empty
field(s), logged and counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from risk_monitor.adapters.row_validation import RejectedRow


def ticker_items(body: Any) -> list[Any] | None:
    """The raw ticker items of a venue answer: a bare list (binance) or ``data`` (okx)."""
    if isinstance(body, list):
        return body
    if isinstance(body, Mapping) and isinstance(body.get("data"), list):
        return list(body["data"])
    return None


def _non_finite_fields(item: Any) -> list[str]:
    if not isinstance(item, Mapping):
        return []
    found = []
    for key, value in item.items():
        try:
            if isinstance(value, str | int | float) and not isinstance(value, bool) \
                    and not math.isfinite(float(value)):
                found.append(str(key))
        except (ValueError, OverflowError):
            continue
        if isinstance(value, str) and value.strip() == "":
            found.append(str(key))
    return found


def parse_tickers_each(client: Any, items: Sequence[Any], *, venue: str, account: str,
                       symbols: Sequence[str] | None) -> tuple[dict[str, Any], list[RejectedRow]]:
    """ccxt's ``parse_ticker`` on each raw item alone: the good tickers, one rejection per bad
    item naming its symbol and the field(s) with a non-finite or empty value."""
    wanted = set(symbols) if symbols else None
    parsed: dict[str, Any] = {}
    rejected: list[RejectedRow] = []
    for item in items:
        try:
            ticker = client.parse_ticker(item)
            symbol = str(ticker["symbol"])
        except Exception as exc:  # ccxt raises anything on a bad value; this item only
            market_id = None
            if isinstance(item, Mapping):
                market_id = item.get("symbol") or item.get("instId") or item.get("s")
            try:
                symbol = str(client.safe_symbol(market_id)) if market_id else "?"
            except Exception:
                symbol = str(market_id)[:64]
            if wanted is not None and symbol not in wanted:
                continue
            fields = _non_finite_fields(item)
            values = ",".join(repr(item[f])[:32] for f in fields) if fields else \
                f"{type(exc).__name__}: {str(exc)[:80]}"
            rejected.append(RejectedRow(venue=venue, account=account, instrument=symbol,
                                        asset=None, field=",".join(fields) or "?",
                                        value=values, check="ccxt parse_ticker"))
            continue
        if wanted is None or symbol in wanted:
            parsed[symbol] = ticker
    return parsed, rejected

