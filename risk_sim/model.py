"""The simulator's value types: numbers, errors, instruments, quotes, accounts and their views.

Shared by the market model (:mod:`risk_sim.market`), its trading engine
(:mod:`risk_sim.engine`) and the venue servers; pure data, no locks, no I/O.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal

SECONDS_PER_YEAR = 365.0 * 24 * 3600
VENUES: tuple[str, ...] = ("binance", "okx")
ZERO = Decimal(0)
MONEY = Decimal("1e-8")
STABLE = frozenset({"USDT", "USDC", "USD", "BUSD", "FDUSD", "DAI", "TUSD"})

PositionMode = Literal["one_way", "hedge"]
MarginMode = Literal["cross", "isolated"]
ClockMode = Literal["manual", "realtime"]
PositionSide = Literal["net", "long", "short"]
Side = Literal["buy", "sell"]
RejectReason = Literal[
    "unknown_symbol", "bad_side", "bad_type", "bad_quantity", "below_min", "would_rest",
    "position_side_mismatch", "position_side_required", "reduce_only_rejected",
    "reduce_only_not_allowed", "reduce_exceeds_position", "insufficient_margin",
]


def dec(value: Any) -> Decimal:
    """A Decimal from a str, int, float or Decimal (floats through ``repr`` so 0.1 stays 0.1)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return Decimal(repr(value))
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def fmt(value: Decimal) -> str:
    """Plain decimal notation without exponent or trailing zeros (``60000``, ``0.001``)."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def money(value: Decimal) -> Decimal:
    return value.quantize(MONEY, rounding=ROUND_HALF_EVEN)


def _round_to(value: Decimal, step: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    return (value / step).to_integral_value(rounding=rounding) * step


# -- errors ---------------------------------------------------------------------------------------
class SimError(Exception):
    """A request the market model refuses (unknown account or symbol, bad state change)."""


class UnknownInstrument(SimError):
    pass


class UnknownAccount(SimError):
    pass


class StateConflict(SimError):
    """E.g. changing the position mode while positions are open."""


class OrderRejected(SimError):
    """The trading engine refused an order; venues map ``reason`` to their own error codes."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason
        self.message = message


# -- instruments ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instrument:
    """One perpetual swap as listed on one venue."""

    venue: str
    symbol: str  # ccxt unified, e.g. BTC/USDT:USDT
    venue_id: str  # BTCUSDT on Binance, BTC-USDT-SWAP on OKX
    base: str
    quote: str
    settle: str
    contract_size: Decimal  # base units per contract (Binance 1, OKX ctVal)
    tick_size: Decimal
    lot_size: Decimal  # contracts step
    min_qty: Decimal  # contracts
    max_leverage: int
    maint_margin_rate: Decimal

    def round_price(self, price: float | Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
        value = price if isinstance(price, Decimal) else Decimal(repr(float(price)))
        return max(self.tick_size, _round_to(value, self.tick_size, rounding))

    def base_qty(self, contracts: Decimal) -> Decimal:
        return contracts * self.contract_size


#: defaults per base asset: (binance tick, binance lot, okx ctVal, okx tick, okx lot, mmr)
_CATALOG: dict[str, tuple[str, str, str, str, str, str]] = {
    "BTC": ("0.1", "0.001", "0.01", "0.1", "0.01", "0.004"),
    "ETH": ("0.01", "0.001", "0.1", "0.01", "0.01", "0.005"),
    "SOL": ("0.01", "1", "1", "0.01", "0.01", "0.01"),
    "XRP": ("0.0001", "0.1", "100", "0.0001", "0.01", "0.01"),
    "DOGE": ("0.00001", "1", "1000", "0.00001", "0.01", "0.01"),
}
_GENERIC = ("0.0001", "1", "1", "0.0001", "1", "0.01")
_INSTRUMENT_KEYS = frozenset({"id", "contract_size", "tick_size", "lot_size", "min_qty",
                              "max_leverage", "maint_margin_rate"})


def parse_symbol(symbol: str) -> tuple[str, str, str]:
    """``BTC/USDT:USDT`` → (BTC, USDT, USDT); only linear perpetuals are simulated."""
    try:
        pair, settle = symbol.split(":")
        base, quote = pair.split("/")
    except ValueError:
        raise ValueError(f"symbol {symbol!r} is not a unified perpetual symbol like "
                         "'BTC/USDT:USDT'") from None
    if not (base and quote and settle) or settle != quote:
        raise ValueError(f"symbol {symbol!r}: only linear perpetuals (settle == quote) are "
                         "simulated")
    return base, quote, settle


def make_instrument(venue: str, symbol: str, overrides: Mapping[str, Any] | None = None
                    ) -> Instrument:
    """The instrument with the venue's conventions, defaults from a small catalog."""
    base, quote, settle = parse_symbol(symbol)
    overrides = dict(overrides or {})
    unknown = set(overrides) - _INSTRUMENT_KEYS
    if unknown:
        raise ValueError(f"unknown instrument settings {sorted(unknown)} for {venue} {symbol}")
    b_tick, b_lot, o_ct, o_tick, o_lot, mmr = _CATALOG.get(base, _GENERIC)
    if venue == "binance":
        base_defaults: dict[str, Any] = {
            "id": f"{base}{quote}", "contract_size": "1", "tick_size": b_tick,
            "lot_size": b_lot, "min_qty": b_lot, "max_leverage": 125}
    elif venue == "okx":
        base_defaults = {
            "id": f"{base}-{quote}-SWAP", "contract_size": o_ct, "tick_size": o_tick,
            "lot_size": o_lot, "min_qty": o_lot, "max_leverage": 100}
    else:
        raise ValueError(f"unknown venue {venue!r}; simulated venues: {', '.join(VENUES)}")
    default: dict[str, Any] = dict(base_defaults, maint_margin_rate=mmr)
    default.update(overrides)
    return Instrument(
        venue=venue, symbol=symbol, venue_id=str(default["id"]), base=base, quote=quote,
        settle=settle, contract_size=dec(default["contract_size"]),
        tick_size=dec(default["tick_size"]), lot_size=dec(default["lot_size"]),
        min_qty=dec(default["min_qty"]), max_leverage=int(default["max_leverage"]),
        maint_margin_rate=dec(default["maint_margin_rate"]),
    )


@dataclass(frozen=True)
class Quote:
    """One venue's published market data for one instrument."""

    venue: str
    symbol: str
    last: Decimal
    mark: Decimal
    index: Decimal
    bid: Decimal
    ask: Decimal
    bid_qty: Decimal
    ask_qty: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal  # base units over the (simulated) 24 h
    quote_volume: Decimal
    funding_rate: Decimal
    trades: int
    elapsed: float  # simulated time of the figures


# -- accounts -------------------------------------------------------------------------------------
@dataclass
class Position:
    symbol: str
    side: PositionSide  # net = one-way mode (signed contracts)
    contracts: Decimal
    entry_price: Decimal
    position_id: str
    margin_mode: MarginMode = "cross"
    realized_pnl: Decimal = ZERO  # trade P&L over this position's life
    fees: Decimal = ZERO  # fees paid over this position's life (positive number)
    opened_ms: int = 0
    updated_ms: int = 0

    @property
    def direction(self) -> int:
        if self.side == "long":
            return 1
        if self.side == "short":
            return -1
        return 1 if self.contracts > 0 else -1 if self.contracts < 0 else 0


@dataclass
class Balance:
    asset: str
    wallet: Decimal
    updated_ms: int = 0


@dataclass(frozen=True)
class Trade:
    id: int
    order_id: int
    symbol: str
    side: Side
    position_side: str  # net | long | short
    price: Decimal
    contracts: Decimal
    base_qty: Decimal
    quote_qty: Decimal
    fee: Decimal
    fee_asset: str
    realized_pnl: Decimal
    time_ms: int
    maker: bool = False


OrderStatus = Literal["open", "partially_filled", "filled", "canceled", "expired"]


@dataclass
class Order:
    """An order's current state; the engine mutates it, events carry :meth:`snapshot` copies."""

    id: int
    client_order_id: str
    symbol: str
    side: Side
    type: Literal["market", "limit"]
    position_side: str
    amount: Decimal  # contracts
    price: Decimal | None  # limit price
    average: Decimal  # 0 until the first fill
    filled: Decimal
    status: OrderStatus
    reduce_only: bool
    fee: Decimal
    fee_asset: str
    realized_pnl: Decimal
    time_ms: int
    margin_mode: MarginMode
    updated_ms: int = 0
    quote_filled: Decimal = Decimal(0)  # sum of price * base quantity over the fills
    external: bool = False  # booked by the venue, not sent through the API (injected fill)

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in ("open", "partially_filled")

    def snapshot(self) -> Order:
        return replace(self)


@dataclass
class Account:
    venue: str
    name: str
    api_key: str
    secret: str
    passphrase: str | None
    position_mode: PositionMode = "one_way"
    default_leverage: int = 10
    leverage: dict[str, int] = field(default_factory=dict)
    margin_modes: dict[str, MarginMode] = field(default_factory=dict)
    default_margin_mode: MarginMode = "cross"
    balances: dict[str, Balance] = field(default_factory=dict)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    orders: list[Order] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    open_orders: dict[int, Order] = field(default_factory=dict)
    realized_pnl: dict[str, Decimal] = field(default_factory=dict)  # per settle asset, all time
    fees_paid: dict[str, Decimal] = field(default_factory=dict)
    funding: dict[str, Decimal] = field(default_factory=dict)  # credited (negative: paid)
    funding_log: list[tuple[int, str, str, Decimal]] = field(default_factory=list)  # ms, sym, ccy

    def leverage_for(self, symbol: str) -> int:
        return self.leverage.get(symbol, self.default_leverage)

    def margin_mode_for(self, symbol: str) -> MarginMode:
        return self.margin_modes.get(symbol, self.default_margin_mode)


@dataclass(frozen=True)
class PositionView:
    """A position valued at the venue's current mark price."""

    instrument: Instrument
    position: Position
    contracts: Decimal  # >= 0
    side: Literal["long", "short"]
    quantity: Decimal  # signed base units
    mark: Decimal
    last: Decimal
    notional: Decimal  # abs(quantity) * mark
    unrealized_pnl: Decimal
    initial_margin: Decimal
    maint_margin: Decimal
    liquidation_price: Decimal
    leverage: int
    margin_mode: MarginMode

    @property
    def symbol(self) -> str:
        return self.instrument.symbol


@dataclass(frozen=True)
class BalanceView:
    asset: str
    wallet: Decimal  # excludes unrealized P&L
    unrealized_pnl: Decimal
    margin_balance: Decimal  # wallet + unrealized
    initial_margin: Decimal
    maint_margin: Decimal
    available: Decimal
    updated_ms: int


def _credentials(seed: int, venue: str, account: str) -> tuple[str, str, str | None]:
    rng = random.Random(f"{seed}:{venue}:{account}:credentials")
    alnum = string.ascii_letters + string.digits
    if venue == "okx":
        key = (f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-"
               f"{rng.getrandbits(16):04x}-{rng.getrandbits(16):04x}-{rng.getrandbits(48):012x}")
        secret = f"{rng.getrandbits(128):032X}"
        passphrase = "".join(rng.choice(alnum) for _ in range(16)) + "!9"
        return key, secret, passphrase
    key = "".join(rng.choice(alnum) for _ in range(64))
    secret = "".join(rng.choice(alnum) for _ in range(64))
    return key, secret, None


