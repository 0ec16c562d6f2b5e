"""The desk's fills and funding through ccxt (read only): ``fetch_my_trades`` and funding
history, mapped to ``domain.realised`` types.

Each fill keeps the venue's own realised P&L when the venue gives one (Binance
``info.realizedPnl``, OKX ``info.fillPnl``), so the rebuilt figure can be checked against it.
The private websocket (ccxt.pro ``watch_my_trades``) delivers the same unified structure, so
one mapper serves the stream and the REST poll.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from risk_monitor.adapters.errors import map_exception
from risk_monitor.domain.figures import finite
from risk_monitor.domain.realised import Fill, Funding
from risk_monitor.platform.errors import DataValidationError
from risk_monitor.platform.settings import VenueSettings

_REPORTED_KEYS = ("realizedPnl", "fillPnl", "rp")


def _when(ms: Any) -> datetime | None:
    value = finite(ms)
    return datetime.fromtimestamp(value / 1000, UTC) if value is not None else None


def map_trade(trade: Mapping[str, Any], *, venue: str, account: str,
              markets: Mapping[str, Mapping[str, Any]] | None = None) -> Fill:
    """One ccxt unified trade as a Fill (``amount`` is in contracts on derivatives markets:
    times the market's contract size gives base units); DataValidationError names a bad
    field."""
    info = trade.get("info") or {}
    quantity, price = finite(trade.get("amount")), finite(trade.get("price"))
    market = (markets or {}).get(str(trade.get("symbol") or "")) or {}
    size = finite(market.get("contractSize")) if market.get("contract") else None
    if quantity is not None and size:
        quantity *= size
    side = str(trade.get("side") or "").lower()
    if quantity is None or quantity <= 0 or price is None or price <= 0 \
            or side not in ("buy", "sell") or not trade.get("symbol"):
        raise DataValidationError(
            f"{venue}: trade {trade.get('id')!r} has no usable symbol, side, amount or price",
            source=venue, details={"field": "trade"})
    fee = trade.get("fee") or {}
    fee_cost = _charge_positive_fee(finite(fee.get("cost")), info)
    reported = next((finite(info.get(k)) for k in _REPORTED_KEYS if info.get(k) is not None),
                    None)
    return Fill(
        venue=venue, account=account, instrument=str(trade["symbol"]),
        trade_id=str(trade.get("id") or ""), side=side, quantity=quantity, price=price,
        fee=fee_cost, fee_currency=str(fee.get("currency") or ""),
        timestamp=_when(trade.get("timestamp")), order_id=str(trade.get("order") or ""),
        client_order_id=str(trade.get("clientOrderId") or info.get("clientOrderId")
                            or info.get("clOrdId") or info.get("c") or ""),
        reported_realised=reported)


def _charge_positive_fee(cost: float | None, info: Mapping[str, Any]) -> float:
    """ccxt's unified fee cost is positive for a charge. ccxt.pro's okx ``order_to_trade``
    (4.5.x) passes OKX's own ``fillFee`` through, where a charge is negative (ccxt's REST parser
    negates it): without this an OKX fill from the private stream overstated realised P&L by
    twice its fee. Compared by value, so a ccxt that fixes the sign is not flipped twice."""
    native = finite(info.get("fillFee"))
    if cost is not None and native is not None and cost == native:
        return -cost
    return cost or 0.0


def map_funding(rows: Iterable[Mapping[str, Any]], *, venue: str, account: str
                ) -> list[Funding]:
    """ccxt ``fetch_funding_history`` rows (``amount`` > 0 received)."""
    out = []
    for row in rows:
        amount = finite(row.get("amount"))
        if amount is None or not row.get("symbol"):
            raise DataValidationError(f"{venue}: funding row {row.get('id')!r} is unusable",
                                      source=venue, details={"field": "funding"})
        out.append(Funding(venue, account, str(row["symbol"]), amount,
                           str(row.get("code") or ""), _when(row.get("timestamp")),
                           str(row.get("id") or "")))
    return out


class CcxtTradeHistory:
    """Fills and funding of one venue account, through the shared read-only ccxt client."""

    def __init__(self, venue: VenueSettings) -> None:
        self.settings = venue
        self.venue = venue.id
        self.account = venue.account

    def _client(self) -> Any:
        from risk_monitor.adapters.ccxt_exchange import shared_client

        return shared_client(self.settings)

    def fetch_fills(self, symbols: Sequence[str], since: datetime | None = None) -> list[Fill]:
        """Every fill of ``symbols`` since ``since`` (Binance asks per symbol)."""
        client = self._client()
        since_ms = int(since.timestamp() * 1000) if since else None
        fills: list[Fill] = []
        try:
            client.load_markets()
            for symbol in symbols:
                trades = client.fetch_my_trades(symbol, since_ms)
                fills += [map_trade(t, venue=self.venue, account=self.account,
                                    markets=client.markets) for t in trades]
        except DataValidationError:
            raise
        except Exception as exc:
            raise map_exception(exc, source=self.venue, endpoint="fetch_my_trades") from exc
        return fills

    def fetch_funding(self, symbols: Sequence[str], since: datetime | None = None
                      ) -> list[Funding]:
        client = self._client()
        if not client.has.get("fetchFundingHistory"):
            return []
        since_ms = int(since.timestamp() * 1000) if since else None
        out: list[Funding] = []
        try:
            for symbol in symbols:
                rows = client.fetch_funding_history(symbol, since_ms)
                out += map_funding(rows, venue=self.venue, account=self.account)
        except DataValidationError:
            raise
        except Exception as exc:
            raise map_exception(exc, source=self.venue, endpoint="fetch_funding_history") \
                from exc
        return out
