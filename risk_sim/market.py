"""The simulated market behind the venue simulators: instruments, prices, accounts, trading.

Pure Python (no aiohttp, no I/O): the Binance and OKX servers render this one state in each
venue's wire format, scenarios drive it, and tests read its truth to compare with what Risk
Monitor collected. Everything is deterministic from the seed: price paths advance in fixed
steps of simulated time, so a manual clock (tests) and a real-time clock (demo) produce the same
path for the same elapsed time.

Time: ``Clock.elapsed()`` is simulated seconds since the start and drives the price paths; wire
timestamps are always real wall time (plus a venue's skew offset, set on its server), so
freshness checks in Risk Monitor behave as in production. Money is :class:`~decimal.Decimal`.

Venue rules implemented by the trading engine (documented in docs/simulators.md):

* fills (see :mod:`risk_sim.engine` for depth, slippage, resting orders and account events):
  market orders and marketable limit orders fill at the touch (buy at the ask, sell at the bid;
  ask/bid = last ± half the spread, rounded out to the tick), walking the book's levels when
  the instrument has a finite ``depth``; every taker fill pays the taker fee.
* increase: new entry = size-weighted average of the old entry and the fill price.
* reduce / close / flip: realized P&L = (exit - entry) * contracts * contract size * sign
  (+1 long, -1 short), credited to the wallet balance of the settle asset; a flip opens the rest
  at the fill price.
* fees: base quantity * fill price * fee rate, in the settle asset, deducted from the wallet.
* reduce-only: one-way mode only; rejected when it would not reduce; clipped to the position.
* hedge mode keeps ``long`` and ``short`` positions apart; an order names its position side.
* margin: initial margin = notional / leverage, maintenance = notional * maintenance rate;
  available = wallet + unrealized P&L - initial margin (never below zero); an order whose added
  initial margin plus fee exceeds the available balance is rejected.
* liquidation price (simple rule, isolated approximation): long
  ``entry * (1 - 1/leverage) / (1 - mmr)``, short ``entry * (1 + 1/leverage) / (1 + mmr)``.
  The simulator never liquidates anything itself.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal, cast

from risk_sim.engine import TradingEngine, UnknownOrder
from risk_sim.events import AccountEvent, AccountListener
from risk_sim.model import (
    MONEY,
    SECONDS_PER_YEAR,
    STABLE,
    VENUES,
    ZERO,
    Account,
    Balance,
    BalanceView,
    ClockMode,
    Instrument,
    MarginMode,
    Order,
    OrderRejected,
    Position,
    PositionMode,
    PositionSide,
    PositionView,
    Quote,
    RejectReason,
    Side,
    SimError,
    StateConflict,
    Trade,
    UnknownAccount,
    UnknownInstrument,
    _credentials,
    _round_to,
    dec,
    fmt,
    make_instrument,
    money,
    parse_symbol,
)

__all__ = [
    "MONEY", "SECONDS_PER_YEAR", "STABLE", "VENUES", "ZERO", "Account", "AccountEvent",
    "AccountListener", "AccountSpec", "Balance", "BalanceView", "Clock", "ClockMode",
    "Instrument", "InstrumentSpec", "MarginMode", "Market", "MarketSpec", "Order",
    "OrderRejected", "Position", "PositionMode", "PositionSide", "PositionSpec", "PositionView",
    "PricePath", "Quote", "RejectReason", "Side", "SimError", "StateConflict", "Trade",
    "UnknownAccount", "UnknownInstrument", "UnknownOrder", "VenueSpec", "dec", "fmt",
    "make_instrument", "money", "parse_symbol",
]

Listener = Callable[[dict[str, set[str]]], None]



# -- clock ----------------------------------------------------------------------------------------
class Clock:
    """Simulated time: ``manual`` moves only on :meth:`advance`; ``realtime`` follows the wall."""

    def __init__(self, mode: ClockMode = "manual") -> None:
        if mode not in ("manual", "realtime"):
            raise ValueError(f"clock mode must be 'manual' or 'realtime', not {mode!r}")
        self.mode: ClockMode = mode
        self._lock = threading.Lock()
        self._advanced = 0.0
        self._origin = time.monotonic()

    def elapsed(self) -> float:
        """Simulated seconds since the start (drives the price paths)."""
        with self._lock:
            if self.mode == "manual":
                return self._advanced
            return time.monotonic() - self._origin + self._advanced

    def advance(self, seconds: float) -> None:
        """Move simulated time forward (in real-time mode: jump ahead of the wall)."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._advanced += seconds

    def reset(self) -> None:
        with self._lock:
            self._advanced = 0.0
            self._origin = time.monotonic()

    @staticmethod
    def wall() -> float:
        """Wall time (epoch seconds) used for wire timestamps."""
        return time.time()


# -- specifications (what a scenario declares) --------------------------------------------------
@dataclass
class InstrumentSpec:
    symbol: str
    price: Decimal
    volatility: float = 0.5  # annualised, of the log price
    mark_premium_bps: float = 0.5  # mark = last * (1 + premium)
    spread_bps: float = 1.0
    funding_rate: Decimal = Decimal("0.0001")
    volume_24h: Decimal = Decimal("10000")  # base units, before simulated trades
    depth: Decimal | None = None  # base units per book level; None: unlimited at the touch
    level_bps: float = 1.0  # price step between book levels (at least one tick)
    venues: dict[str, dict[str, Any]] | None = None  # None: listed on every venue


@dataclass
class PositionSpec:
    symbol: str
    side: Literal["long", "short"]
    contracts: Decimal
    entry_price: Decimal | None = None  # None: the current last price
    leverage: int | None = None
    margin_mode: MarginMode | None = None


@dataclass
class AccountSpec:
    name: str = "main"
    position_mode: PositionMode = "one_way"
    balances: dict[str, Decimal] = field(default_factory=dict)
    default_leverage: int = 10
    leverage: dict[str, int] = field(default_factory=dict)
    margin_mode: MarginMode = "cross"
    positions: list[PositionSpec] = field(default_factory=list)


@dataclass
class VenueSpec:
    name: str
    basis_bps: float = 0.0
    maker_fee: Decimal = Decimal("0.0002")
    taker_fee: Decimal = Decimal("0.0005")
    accounts: list[AccountSpec] = field(default_factory=lambda: [AccountSpec()])


@dataclass
class MarketSpec:
    seed: int = 0
    resting_orders: bool = False  # False: a limit order that would rest is rejected
    step_seconds: float = 1.0
    instruments: list[InstrumentSpec] = field(default_factory=list)
    venues: list[VenueSpec] = field(default_factory=lambda: [VenueSpec(v) for v in VENUES])


# -- price paths ----------------------------------------------------------------------------------
class _Walk:
    """A Gaussian random walk of the log price in fixed steps, reproducible from its seed."""

    def __init__(self, seed: str, sigma: float) -> None:
        self._rng = random.Random(seed)
        self.sigma = sigma
        self._values = [0.0]

    def at(self, k: int) -> float:
        values = self._values
        while len(values) <= k:
            values.append(values[-1] + (self._rng.gauss(0.0, self.sigma) if self.sigma else 0.0))
        return values[k]


@dataclass
class _Move:
    start: float
    duration: float
    log_delta: float

    def value(self, t: float) -> float:
        if t <= self.start:
            return 0.0
        if self.duration <= 0 or t >= self.start + self.duration:
            return self.log_delta
        return self.log_delta * (t - self.start) / self.duration


class PricePath:
    """Log price = anchor + walk since the anchor + scheduled moves (linear in log, i.e. a
    constant rate of return); scripted points pin the price, linear in price between points."""

    def __init__(self, price: float, walk: _Walk | None, step_seconds: float) -> None:
        self._walk = walk
        self._step = step_seconds
        self._anchor_log = math.log(price)
        self._anchor_k = 0
        self._moves: list[_Move] = []
        self._pinned: list[tuple[float, float]] = []  # (t, price), linear in price

    def _k(self, t: float) -> int:
        return math.floor(t / self._step + 1e-9)

    def log_price(self, t: float) -> float:
        pinned = self._pinned
        if pinned:
            if t <= pinned[0][0]:
                return math.log(pinned[0][1])
            if t < pinned[-1][0]:
                for (t0, p0), (t1, p1) in itertools.pairwise(pinned):
                    if t0 <= t <= t1:
                        share = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
                        return math.log(p0 + (p1 - p0) * share)
            end_t, end_price = pinned[-1]
            self._pinned = []
            self._rebase(end_t, math.log(end_price))
        walk = (self._walk.at(self._k(t)) - self._walk.at(self._anchor_k)) if self._walk else 0.0
        return self._anchor_log + walk + sum(m.value(t) for m in self._moves)

    def _rebase(self, t: float, log_price: float) -> None:
        self._anchor_log = log_price
        self._anchor_k = self._k(t)
        self._moves = []

    def set(self, t: float, price: float) -> None:
        self._pinned = []
        self._rebase(t, math.log(price))

    def move(self, t: float, pct: float, over: float) -> None:
        if pct <= -100:
            raise ValueError("a move of -100 % or more would make the price zero or negative")
        current = self.log_price(t)
        if self._pinned:  # a move while pinned starts from the pinned price
            self._pinned = []
            self._rebase(t, current)
        self._moves.append(_Move(t, max(0.0, over), math.log1p(pct / 100.0)))

    def pin(self, t: float, points: list[tuple[float, float]]) -> None:
        """Follow ``points`` (absolute time, price) linearly; continue from the last one."""
        current = math.exp(self.log_price(t))
        path = sorted((pt, price) for pt, price in points)
        if not path or path[0][0] > t:
            path.insert(0, (t, current))
        self._pinned = path

    def set_sigma(self, t: float, sigma: float) -> None:
        if self._walk is not None:
            self._walk.at(self._k(t))  # steps so far keep the old volatility
            self._walk.sigma = sigma


@dataclass
class _VenueAdjust:
    offset: float = 0.0
    moves: list[_Move] = field(default_factory=list)

    def log_value(self, t: float) -> float:
        return self.offset + sum(m.value(t) for m in self.moves)


# -- the market -------------------------------------------------------------------------------------
class Market(TradingEngine):
    """All simulated venues, their instruments, prices and accounts; thread-safe."""

    def __init__(self, spec: MarketSpec | None = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock("manual")
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._driver: threading.Thread | None = None
        self._driver_stop = threading.Event()
        self._init_engine()
        self.load(spec or MarketSpec())

    # -- setup ----------------------------------------------------------------------------------
    def load(self, spec: MarketSpec) -> None:
        """(Re)build every instrument, path and account from ``spec``; listeners are kept."""
        with self._lock:
            self.spec = spec
            self.seed = spec.seed
            self.step_seconds = spec.step_seconds
            self.clock.reset()
            venue_names = [v.name for v in spec.venues]
            for name in venue_names:
                if name not in VENUES:
                    raise ValueError(f"unknown venue {name!r}; simulated venues: "
                                     f"{', '.join(VENUES)}")
            self.venues: dict[str, VenueSpec] = {v.name: v for v in spec.venues}
            self.instrument_specs: dict[str, InstrumentSpec] = {}
            self.instruments: dict[str, dict[str, Instrument]] = {v: {} for v in venue_names}
            self._by_id: dict[str, dict[str, Instrument]] = {v: {} for v in venue_names}
            self._paths: dict[str, PricePath] = {}
            self._adjust: dict[tuple[str, str], _VenueAdjust] = {}
            self._stats: dict[tuple[str, str], dict[str, Any]] = {}
            self._published: dict[tuple[str, str], Quote] = {}
            sigma_scale = math.sqrt(spec.step_seconds / SECONDS_PER_YEAR)
            for ins in spec.instruments:
                parse_symbol(ins.symbol)
                if ins.symbol in self.instrument_specs:
                    raise ValueError(f"instrument {ins.symbol} declared twice")
                if ins.price <= 0:
                    raise ValueError(f"instrument {ins.symbol}: price must be > 0")
                self.instrument_specs[ins.symbol] = ins
                walk = _Walk(f"{spec.seed}:{ins.symbol}:walk", ins.volatility * sigma_scale)
                self._paths[ins.symbol] = PricePath(float(ins.price), walk, spec.step_seconds)
                listed = ins.venues if ins.venues is not None else {v: {} for v in venue_names}
                for venue, overrides in listed.items():
                    if venue not in self.instruments:
                        raise ValueError(f"instrument {ins.symbol} lists venue {venue!r}, which "
                                         "the market does not simulate")
                    inst = make_instrument(venue, ins.symbol, overrides or {})
                    self.instruments[venue][ins.symbol] = inst
                    self._by_id[venue][inst.venue_id] = inst
                    self._adjust[(venue, ins.symbol)] = _VenueAdjust()
            self.accounts: dict[str, dict[str, Account]] = {v: {} for v in venue_names}
            self._keys: dict[str, dict[str, Account]] = {v: {} for v in venue_names}
            self._next_order_id = {v: 1 for v in venue_names}
            self._next_trade_id = {v: 1 for v in venue_names}
            self._next_position_id = {v: 1 for v in venue_names}
            now_ms = self._wall_ms()
            for key in self._adjust:
                quote = self._compute_quote(*key, t=0.0)
                self._stats[key] = {"open": quote.last, "high": quote.last, "low": quote.last,
                                    "volume": ZERO, "quote_volume": ZERO, "trades": 0}
                self._published[key] = self._compute_quote(*key, t=0.0)
            for venue_spec in spec.venues:
                for acc_spec in venue_spec.accounts:
                    self._create_account(venue_spec.name, acc_spec, now_ms)
        self._notify({v: set(self.instruments[v]) for v in self.instruments})

    def _create_account(self, venue: str, spec: AccountSpec, now_ms: int) -> Account:
        if spec.name in self.accounts[venue]:
            raise ValueError(f"account {spec.name!r} declared twice on {venue}")
        key, secret, passphrase = _credentials(self.seed, venue, spec.name)
        account = Account(venue=venue, name=spec.name, api_key=key, secret=secret,
                          passphrase=passphrase, position_mode=spec.position_mode,
                          default_leverage=spec.default_leverage, leverage=dict(spec.leverage),
                          default_margin_mode=spec.margin_mode)
        for asset, amount in spec.balances.items():
            account.balances[asset] = Balance(asset, money(dec(amount)), now_ms)
        self.accounts[venue][spec.name] = account
        self._keys[venue][key] = account
        for pos in spec.positions:
            if pos.leverage is not None:
                account.leverage[pos.symbol] = pos.leverage
            if pos.margin_mode is not None:
                account.margin_modes[pos.symbol] = pos.margin_mode
            self._set_position_locked(venue, spec.name, pos.symbol, side=pos.side,
                                      contracts=pos.contracts, entry_price=pos.entry_price)
        return account

    # -- listeners and clock ------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """Call ``listener({venue: {symbols}})`` after published prices change (any thread)."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, changes: dict[str, set[str]]) -> None:
        changes = {v: s for v, s in changes.items() if s}
        if not changes:
            return
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(changes)

    def advance(self, seconds: float) -> None:
        """Move simulated time forward and publish the new prices."""
        self.clock.advance(seconds)
        self.refresh()

    def refresh(self) -> dict[str, set[str]]:
        """Recompute every quote at the current simulated time; notify on changes."""
        with self._lock:
            t = self.clock.elapsed()
            changes: dict[str, set[str]] = {}
            for key in self._adjust:
                quote = self._compute_quote(*key, t=t)
                previous = self._published.get(key)
                stats = self._stats[key]
                stats["high"] = max(stats["high"], quote.last)
                stats["low"] = min(stats["low"], quote.last)
                quote = replace(quote, high=stats["high"], low=stats["low"])
                self._published[key] = quote
                if previous is None or (previous.last, previous.mark, previous.bid, previous.ask,
                                        previous.volume) != (quote.last, quote.mark, quote.bid,
                                                             quote.ask, quote.volume):
                    changes.setdefault(key[0], set()).add(key[1])
            self._match_resting_locked()
        self._flush_events()
        self._notify(changes)
        return changes

    def start_clock_driver(self, interval: float = 0.25) -> None:
        """In real-time mode, publish prices every ``interval`` seconds from a daemon thread."""
        if self.clock.mode != "realtime" or self._driver is not None:
            return
        self._driver_stop.clear()

        def drive() -> None:
            while not self._driver_stop.wait(interval):
                self.refresh()

        self._driver = threading.Thread(target=drive, name="risk-sim-clock", daemon=True)
        self._driver.start()

    def stop_clock_driver(self) -> None:
        self._driver_stop.set()
        if self._driver is not None:
            self._driver.join(timeout=5)
            self._driver = None

    @staticmethod
    def _wall_ms() -> int:
        return int(time.time() * 1000)

    # -- lookups --------------------------------------------------------------------------------
    def instrument(self, venue: str, symbol: str) -> Instrument:
        """By unified symbol or venue id."""
        with self._lock:
            listed = self.instruments.get(venue)
            if listed is None:
                raise UnknownInstrument(f"venue {venue!r} is not simulated")
            inst = listed.get(symbol) or self._by_id[venue].get(symbol)
            if inst is None:
                raise UnknownInstrument(f"{venue} does not list {symbol!r}")
            return inst

    def instrument_by_id(self, venue: str, venue_id: str) -> Instrument | None:
        with self._lock:
            return self._by_id.get(venue, {}).get(venue_id)

    def account(self, venue: str, name: str = "main") -> Account:
        with self._lock:
            account = self.accounts.get(venue, {}).get(name)
            if account is None:
                raise UnknownAccount(f"{venue} has no account {name!r}")
            return account

    def account_by_key(self, venue: str, api_key: str) -> Account | None:
        with self._lock:
            return self._keys.get(venue, {}).get(api_key)

    def credentials(self) -> dict[str, dict[str, dict[str, str | None]]]:
        """Generated API credentials per venue and account (secrets: handle with care)."""
        with self._lock:
            return {venue: {name: {"api_key": a.api_key, "secret": a.secret,
                                   "password": a.passphrase}
                            for name, a in accounts.items()}
                    for venue, accounts in self.accounts.items()}

    # -- prices ---------------------------------------------------------------------------------
    def _compute_quote(self, venue: str, symbol: str, t: float) -> Quote:
        inst = self.instruments[venue][symbol]
        spec = self.instrument_specs[symbol]
        venue_spec = self.venues[venue]
        ref_log = self._paths[symbol].log_price(t)
        log_last = ref_log + self._adjust[(venue, symbol)].log_value(t) + \
            math.log1p(venue_spec.basis_bps / 1e4)
        last = inst.round_price(math.exp(log_last))
        mark = inst.round_price(last * Decimal(repr(1 + spec.mark_premium_bps / 1e4)))
        index = inst.round_price(math.exp(ref_log))
        half = last * Decimal(repr(spec.spread_bps / 2e4))
        bid = _round_to(last - half, inst.tick_size, ROUND_FLOOR)
        ask = _round_to(last + half, inst.tick_size, ROUND_CEILING)
        if bid >= ask:
            bid = ask - inst.tick_size
        bid = max(bid, inst.tick_size)
        stats = self._stats.get((venue, symbol))
        volume = spec.volume_24h + (stats["volume"] if stats else ZERO)
        quote_volume = money(spec.volume_24h * last + (stats["quote_volume"] if stats else ZERO))
        size = max(inst.min_qty, _round_to((spec.depth or Decimal(5)) / inst.contract_size,
                                           inst.lot_size))
        return Quote(venue=venue, symbol=symbol, last=last, mark=mark, index=index, bid=bid,
                     ask=ask, bid_qty=size, ask_qty=size,
                     open=stats["open"] if stats else last,
                     high=stats["high"] if stats else last, low=stats["low"] if stats else last,
                     volume=volume, quote_volume=quote_volume, funding_rate=spec.funding_rate,
                     trades=stats["trades"] if stats else 0, elapsed=t)

    def quote(self, venue: str, symbol: str) -> Quote:
        """The last published quote (what REST and websockets serve)."""
        with self._lock:
            inst = self.instrument(venue, symbol)
            return self._published[(venue, inst.symbol)]

    def quotes(self, venue: str) -> list[Quote]:
        with self._lock:
            return [self._published[(venue, s)] for s in self.instruments[venue]]

    def _symbols_for(self, symbol: str) -> None:
        if symbol not in self._paths:
            raise UnknownInstrument(f"no instrument {symbol!r} in the market")

    def set_price(self, symbol: str, price: Any, venue: str | None = None) -> None:
        """Set the last price now: on every venue, or only on ``venue`` (a basis change)."""
        value = float(dec(price))
        if value <= 0:
            raise ValueError("price must be > 0")
        with self._lock:
            self._symbols_for(symbol)
            t = self.clock.elapsed()
            if venue is None:
                self._paths[symbol].set(t, value)
                for (_venue, s), adjust in self._adjust.items():
                    if s == symbol:
                        adjust.offset, adjust.moves = 0.0, []
            else:
                self.instrument(venue, symbol)
                adjust = self._adjust[(venue, symbol)]
                ref = self._paths[symbol].log_price(t) + \
                    math.log1p(self.venues[venue].basis_bps / 1e4)
                adjust.moves = []
                adjust.offset = math.log(value) - ref
        self.refresh()

    def move_price(self, symbol: str, pct: float, over: float = 0.0,
                   venue: str | None = None) -> None:
        """Move the price by ``pct`` percent, at once or linearly (in log) over ``over`` s."""
        with self._lock:
            self._symbols_for(symbol)
            t = self.clock.elapsed()
            if venue is None:
                self._paths[symbol].move(t, float(pct), float(over))
            else:
                self.instrument(venue, symbol)
                if pct <= -100:
                    raise ValueError("a move of -100 % or more would make the price zero")
                self._adjust[(venue, symbol)].moves.append(
                    _Move(t, max(0.0, float(over)), math.log1p(float(pct) / 100.0)))
        self.refresh()

    def price_path(self, symbol: str, points: Iterable[tuple[float, Any]]) -> None:
        """Pin the reference price to ``points`` = [(seconds from now, price), ...]."""
        with self._lock:
            self._symbols_for(symbol)
            t = self.clock.elapsed()
            absolute = [(t + float(dt), float(dec(p))) for dt, p in points]
            if any(p <= 0 for _, p in absolute):
                raise ValueError("path prices must be > 0")
            self._paths[symbol].pin(t, absolute)
        self.refresh()

    def set_volatility(self, symbol: str | None, volatility: float) -> None:
        """Annualised volatility of the random walk from now on (0 freezes it)."""
        if volatility < 0:
            raise ValueError("volatility must be >= 0")
        sigma = volatility * math.sqrt(self.step_seconds / SECONDS_PER_YEAR)
        with self._lock:
            symbols = [symbol] if symbol is not None else list(self._paths)
            for sym in symbols:
                self._symbols_for(sym)
                self._paths[sym].set_sigma(self.clock.elapsed(), sigma)

    # -- account state changes ----------------------------------------------------------------
    def set_balance(self, venue: str, account: str, asset: str, amount: Any) -> None:
        with self._lock:
            acc = self.account(venue, account)
            acc.balances[asset.upper()] = Balance(asset.upper(), money(dec(amount)),
                                                  self._wall_ms())
            self._event_locked(acc, None, reason="ADJUSTMENT", assets={asset.upper()})
        self._flush_events()

    def set_leverage(self, venue: str, account: str, symbol: str, leverage: int) -> None:
        with self._lock:
            inst = self.instrument(venue, symbol)
            if not 1 <= int(leverage) <= inst.max_leverage:
                raise SimError(f"leverage must be between 1 and {inst.max_leverage}")
            self.account(venue, account).leverage[inst.symbol] = int(leverage)

    def set_margin_mode(self, venue: str, account: str, symbol: str, mode: MarginMode) -> None:
        with self._lock:
            inst = self.instrument(venue, symbol)
            if mode not in ("cross", "isolated"):
                raise SimError("margin mode must be 'cross' or 'isolated'")
            acc = self.account(venue, account)
            acc.margin_modes[inst.symbol] = mode
            for (sym, _), pos in acc.positions.items():
                if sym == inst.symbol:
                    pos.margin_mode = mode

    def set_position_mode(self, venue: str, account: str, mode: PositionMode) -> None:
        if mode not in ("one_way", "hedge"):
            raise SimError("position mode must be 'one_way' or 'hedge'")
        with self._lock:
            acc = self.account(venue, account)
            if acc.position_mode == mode:
                return
            if acc.positions:
                raise StateConflict("the position mode cannot change while positions are open")
            acc.position_mode = mode

    def set_position(self, venue: str, account: str, symbol: str, *,
                     side: Literal["long", "short"], contracts: Any,
                     entry_price: Any | None = None) -> None:
        """Set a position directly (no fill, no fee, wallet unchanged); 0 contracts removes it."""
        with self._lock:
            self._set_position_locked(venue, account, symbol, side=side,
                                      contracts=dec(contracts),
                                      entry_price=None if entry_price is None else dec(entry_price))
            self._event_locked(self.account(venue, account),
                               self.instrument(venue, symbol).symbol, reason="ADJUSTMENT")
        self._flush_events()

    def _set_position_locked(self, venue: str, account: str, symbol: str, *, side: str,
                             contracts: Decimal, entry_price: Decimal | None) -> None:
        acc = self.account(venue, account)
        inst = self.instrument(venue, symbol)
        if side not in ("long", "short"):
            raise SimError("side must be 'long' or 'short'")
        if contracts < 0:
            raise SimError("contracts must be >= 0 (the side gives the direction)")
        key_side = "net" if acc.position_mode == "one_way" else side
        key = (inst.symbol, key_side)
        if contracts == 0:
            if acc.position_mode == "one_way":
                existing = acc.positions.get(key)
                if existing is not None and (existing.direction == 1) != (side == "long"):
                    return  # clearing the other direction of a one-way position: nothing there
            acc.positions.pop(key, None)
            return
        price = entry_price if entry_price is not None else self._published[(venue, inst.symbol)].last
        if price <= 0:
            raise SimError("entry price must be > 0")
        now = self._wall_ms()
        signed = contracts if (key_side != "net" or side == "long") else -contracts
        existing = acc.positions.get(key)
        acc.positions[key] = Position(
            symbol=inst.symbol, side=cast(PositionSide, key_side), contracts=signed,
            entry_price=price,
            position_id=existing.position_id if existing else self._new_position_id(venue),
            margin_mode=acc.margin_mode_for(inst.symbol),
            realized_pnl=existing.realized_pnl if existing else ZERO,
            fees=existing.fees if existing else ZERO,
            opened_ms=existing.opened_ms if existing else now, updated_ms=now)

    def _new_position_id(self, venue: str) -> str:
        n = self._next_position_id[venue]
        self._next_position_id[venue] = n + 1
        return f"{700000000000000000 + n}"

    # -- views ----------------------------------------------------------------------------------
    def _position_view_locked(self, acc: Account, pos: Position) -> PositionView:
        inst = self.instruments[acc.venue][pos.symbol]
        quote = self._published[(acc.venue, pos.symbol)]
        contracts = abs(pos.contracts)
        direction = pos.direction
        qty = inst.base_qty(contracts) * direction
        notional = money(abs(qty) * quote.mark)
        upl = money((quote.mark - pos.entry_price) * qty)
        leverage = acc.leverage_for(pos.symbol)
        mmr = inst.maint_margin_rate
        if direction > 0:
            liq = pos.entry_price * (1 - Decimal(1) / leverage) / (1 - mmr)
        else:
            liq = pos.entry_price * (1 + Decimal(1) / leverage) / (1 + mmr)
        return PositionView(
            instrument=inst, position=pos, contracts=contracts,
            side="long" if direction > 0 else "short", quantity=qty, mark=quote.mark,
            last=quote.last, notional=notional, unrealized_pnl=upl,
            initial_margin=money(notional / leverage), maint_margin=money(notional * mmr),
            liquidation_price=inst.round_price(liq), leverage=leverage,
            margin_mode=pos.margin_mode)

    def positions(self, venue: str, account: str) -> list[PositionView]:
        with self._lock:
            acc = self.account(venue, account)
            views = [self._position_view_locked(acc, p) for p in acc.positions.values()
                     if p.contracts != 0]
            return sorted(views, key=lambda v: (v.symbol, v.position.side))

    def _balance_view_locked(self, acc: Account, asset: str) -> BalanceView:
        balance = acc.balances.get(asset)
        wallet = balance.wallet if balance else ZERO
        upl = im = mm = ZERO
        for pos in acc.positions.values():
            inst = self.instruments[acc.venue][pos.symbol]
            if inst.settle != asset or pos.contracts == 0:
                continue
            view = self._position_view_locked(acc, pos)
            upl += view.unrealized_pnl
            im += view.initial_margin
            mm += view.maint_margin
        available = max(ZERO, wallet + upl - im)
        return BalanceView(asset=asset, wallet=wallet, unrealized_pnl=money(upl),
                           margin_balance=money(wallet + upl), initial_margin=money(im),
                           maint_margin=money(mm), available=money(available),
                           updated_ms=balance.updated_ms if balance else 0)

    def balances(self, venue: str, account: str) -> list[BalanceView]:
        with self._lock:
            acc = self.account(venue, account)
            assets = set(acc.balances)
            assets.update(self.instruments[venue][p.symbol].settle for p in acc.positions.values())
            return [self._balance_view_locked(acc, a) for a in sorted(assets)]

    # -- truth for tests ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything that matters, as plain JSON values; no wall-clock times, no secrets."""
        with self._lock:
            prices: dict[str, dict[str, dict[str, str]]] = {}
            for (venue, symbol), q in sorted(self._published.items()):
                prices.setdefault(venue, {})[symbol] = {
                    "last": fmt(q.last), "mark": fmt(q.mark), "index": fmt(q.index),
                    "bid": fmt(q.bid), "ask": fmt(q.ask)}
            accounts: dict[str, dict[str, Any]] = {}
            for venue, by_name in self.accounts.items():
                for name, acc in sorted(by_name.items()):
                    accounts.setdefault(venue, {})[name] = {
                        "position_mode": acc.position_mode,
                        "balances": {b.asset: {
                            "wallet": fmt(b.wallet), "unrealized_pnl": fmt(b.unrealized_pnl),
                            "margin_balance": fmt(b.margin_balance),
                            "initial_margin": fmt(b.initial_margin),
                            "available": fmt(b.available)} for b in self.balances(venue, name)},
                        "positions": [{
                            "symbol": v.symbol, "side": v.side, "position_side":
                            v.position.side, "contracts": fmt(v.contracts),
                            "entry_price": fmt(v.position.entry_price),
                            "notional": fmt(v.notional), "unrealized_pnl": fmt(v.unrealized_pnl),
                            "realized_pnl": fmt(money(v.position.realized_pnl)),
                            "fees": fmt(v.position.fees),
                            "liquidation_price": fmt(v.liquidation_price),
                            "leverage": v.leverage, "margin_mode": v.margin_mode,
                        } for v in self.positions(venue, name)],
                        "realized_pnl": {k: fmt(money(x)) for k, x in acc.realized_pnl.items()},
                        "fees_paid": {k: fmt(x) for k, x in acc.fees_paid.items()},
                        "funding": {k: fmt(x) for k, x in acc.funding.items()},
                        "orders": len(acc.orders),
                        "open_orders": len(acc.open_orders),
                        "trades": len(acc.trades),
                    }
            return {"elapsed": round(self.clock.elapsed(), 6), "prices": prices,
                    "accounts": accounts}
