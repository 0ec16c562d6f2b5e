"""Scenarios as data: YAML files declaring the initial world and timed steps, and their player.

A scenario holds a seed, instruments with initial prices, accounts with balances and positions
per venue, custodian vault balances, configuration-service documents and a list of steps. Each
step has a label, a duration (seconds of play) and actions (price moves, trades through the
trading engine, balance changes, faults on or off per simulator); it may carry ``expect``, the
outcome the step is designed to produce, so tests and demos assert against the file instead of
hard-coding numbers. Files are validated on load; an error names the offending field, e.g.
``steps.2.actions.0.order.side``. The format is documented in docs/simulators.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from risk_sim.market import (
    AccountSpec,
    InstrumentSpec,
    Market,
    MarketSpec,
    PositionSpec,
    VenueSpec,
    parse_symbol,
)

SimName = Literal["binance", "okx", "fireblocks", "slack", "config_service"]
VenueName = Literal["binance", "okx"]
FaultKindName = Literal["latency", "timeout", "http_error", "rate_limit", "auth_error",
                        "malformed", "partial", "nan", "negative", "absurd", "stale", "skew",
                        "disconnect"]
SCENARIO_PACKAGE = "risk_sim.scenarios"


class ScenarioError(ValueError):
    """A scenario file that cannot be used; ``field`` names the offending key."""

    def __init__(self, message: str, field: str | None = None, source: str | None = None) -> None:
        where = f" at '{field}'" if field else ""
        origin = f"scenario {source}: " if source else ""
        super().__init__(f"{origin}invalid value{where}: {message}" if field else
                         f"{origin}{message}")
        self.field = field
        self.source = source


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Number = Decimal


def _positive(value: Decimal) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise ValueError("must be a number > 0")
    return value


class InstrumentModel(_Model):
    price: Decimal
    volatility: float = Field(default=0.5, ge=0, le=20, description="annualised")
    mark_premium_bps: float = Field(default=0.5, ge=-500, le=500)
    spread_bps: float = Field(default=1.0, ge=0, le=1000)
    funding_rate: Decimal = Decimal("0.0001")
    volume_24h: Decimal = Decimal("10000")
    depth: Decimal | None = Field(default=None, gt=0, description="base units per book level; "
                                  "unset: unlimited liquidity at the touch")
    level_bps: float = Field(default=1.0, ge=0, le=1000)
    venues: dict[VenueName, dict[str, Any]] | None = None

    _price = field_validator("price")(_positive)


class PositionModel(_Model):
    symbol: str
    side: Literal["long", "short"]
    contracts: Decimal = Field(ge=0)
    entry_price: Decimal | None = None
    leverage: int | None = Field(default=None, ge=1, le=125)
    margin_mode: Literal["cross", "isolated"] | None = None


class AccountModel(_Model):
    position_mode: Literal["one_way", "hedge"] = "one_way"
    default_leverage: int = Field(default=10, ge=1, le=125)
    margin_mode: Literal["cross", "isolated"] = "cross"
    leverage: dict[str, int] = Field(default_factory=dict)
    balances: dict[str, Decimal] = Field(default_factory=dict)
    positions: list[PositionModel] = Field(default_factory=list)


class FeesModel(_Model):
    maker: Decimal = Decimal("0.0002")
    taker: Decimal = Decimal("0.0005")


class VenueModel(_Model):
    basis_bps: float = Field(default=0.0, ge=-1000, le=1000)
    fees: FeesModel = Field(default_factory=FeesModel)
    accounts: dict[str, AccountModel] = Field(default_factory=lambda: {"main": AccountModel()})


class VaultAssetModel(_Model):
    total: Decimal = Field(ge=0)
    available: Decimal | None = Field(default=None, ge=0)


class VaultModel(_Model):
    id: str
    name: str | None = None
    assets: dict[str, Decimal | VaultAssetModel] = Field(default_factory=dict)


class CustodianModel(_Model):
    vaults: list[VaultModel] = Field(default_factory=list)


# -- actions --------------------------------------------------------------------------------------
class SetPrice(_Model):
    symbol: str
    price: Decimal
    venue: VenueName | None = None

    _price = field_validator("price")(_positive)


class MovePrice(_Model):
    symbol: str
    pct: float = Field(gt=-100, le=10_000)
    over: float = Field(default=0.0, ge=0)
    venue: VenueName | None = None


class PricePathAction(_Model):
    symbol: str
    points: list[tuple[float, Decimal]] = Field(min_length=1)

    @field_validator("points")
    @classmethod
    def _points(cls, value: list[tuple[float, Decimal]]) -> list[tuple[float, Decimal]]:
        for t, p in value:
            if t < 0 or p <= 0:
                raise ValueError("each point is [seconds >= 0, price > 0]")
        return value


class Volatility(_Model):
    symbol: str | None = None
    value: float = Field(ge=0, le=20)


class InjectFill(_Model):
    """A fill the trading client never sent (back office / manual trade): a book break."""

    venue: VenueName
    account: str = "main"
    symbol: str
    side: Literal["buy", "sell"]
    amount: Decimal
    price: Decimal | None = None  # None: at the touch
    position_side: Literal["long", "short"] | None = None

    _amount = field_validator("amount")(_positive)


class Funding(_Model):
    """Settle funding now on one venue (or every venue)."""

    venue: VenueName | None = None


class OrderAction(_Model):
    venue: VenueName
    account: str = "main"
    symbol: str
    side: Literal["buy", "sell"]
    amount: Decimal
    type: Literal["market", "limit"] = "market"
    price: Decimal | None = None
    reduce_only: bool = False
    position_side: Literal["long", "short"] | None = None

    _amount = field_validator("amount")(_positive)


class TargetNotional(_Model):
    venue: VenueName
    account: str = "main"
    symbol: str
    notional: Decimal = Field(ge=0)
    side: Literal["long", "short"] = "long"


class SetPosition(_Model):
    venue: VenueName
    account: str = "main"
    symbol: str
    side: Literal["long", "short"]
    contracts: Decimal = Field(ge=0)
    entry_price: Decimal | None = None


class SetBalance(_Model):
    venue: VenueName
    account: str = "main"
    asset: str
    amount: Decimal


class VaultBalance(_Model):
    vault: str
    asset: str
    total: Decimal = Field(ge=0)
    available: Decimal | None = Field(default=None, ge=0)
    name: str | None = None


class FaultAction(_Model):
    sim: SimName
    kind: FaultKindName
    route: str = "*"
    probability: float = Field(default=1.0, gt=0, le=1)
    count: int | None = Field(default=None, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)


class ClearFaults(_Model):
    sim: SimName | Literal["all"] = "all"


class WsDisconnect(_Model):
    sim: VenueName
    route: str = "*"
    refuse: bool = Field(default=False, description="refuse reconnects until ws_accept or "
                         "clear_faults")
    refuse_seconds: float | None = Field(default=None, ge=0, description="refuse reconnects "
                                         "for this many wall-clock seconds")


class WsAccept(_Model):
    sim: VenueName


class ClockSkew(_Model):
    sim: VenueName | Literal["fireblocks"]
    seconds: float


class RateLimit(_Model):
    sim: VenueName
    limit: int | None = Field(default=None, ge=0, description="None restores the default")


class PublishConfig(_Model):
    component: str = "risk-monitor"
    document: dict[str, Any]


class Action(_Model):
    """Exactly one of the fields below."""

    set_price: SetPrice | None = None
    move_price: MovePrice | None = None
    price_path: PricePathAction | None = None
    volatility: Volatility | None = None
    order: OrderAction | None = None
    target_notional: TargetNotional | None = None
    inject_fill: InjectFill | None = None
    funding: Funding | None = None
    set_position: SetPosition | None = None
    set_balance: SetBalance | None = None
    vault_balance: VaultBalance | None = None
    fault: FaultAction | None = None
    clear_faults: ClearFaults | None = None
    ws_disconnect: WsDisconnect | None = None
    ws_accept: WsAccept | None = None
    clock_skew: ClockSkew | None = None
    rate_limit: RateLimit | None = None
    publish_config: PublishConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"an action is a mapping with exactly one of "
                             f"{', '.join(type(self).model_fields)}; got {given or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(n for n in type(self).model_fields if getattr(self, n) is not None)

    @property
    def body(self) -> _Model:
        return getattr(self, self.kind)


class StepModel(_Model):
    label: str = Field(min_length=1)
    duration: float = Field(default=5.0, ge=0, description="seconds of play (realtime) or of "
                            "simulated time (manual clock)")
    actions: list[Action] = Field(default_factory=list)
    expect: dict[str, Any] = Field(default_factory=dict)


def _default_venues() -> dict[VenueName, VenueModel]:
    return {"binance": VenueModel(), "okx": VenueModel()}


class Scenario(_Model):
    """A validated scenario file."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    seed: int = 0
    step_seconds: float = Field(default=1.0, gt=0, le=3600)
    resting_orders: bool = Field(default=False, description="limit orders that do not cross "
                                 "rest on the book (otherwise they are rejected)")
    instruments: dict[str, InstrumentModel] = Field(min_length=1)
    venues: dict[VenueName, VenueModel] = Field(default_factory=_default_venues)
    custodian: CustodianModel = Field(default_factory=CustodianModel)
    config_service: dict[str, dict[str, Any]] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepModel] = Field(default_factory=list)

    @field_validator("instruments")
    @classmethod
    def _symbols(cls, value: dict[str, InstrumentModel]) -> dict[str, InstrumentModel]:
        for symbol in value:
            parse_symbol(symbol)
        return value

    def market_spec(self, seed: int | None = None) -> MarketSpec:
        """The market model's specification (``seed`` overrides the file's)."""
        return MarketSpec(
            seed=self.seed if seed is None else seed,
            step_seconds=self.step_seconds, resting_orders=self.resting_orders,
            instruments=[InstrumentSpec(
                symbol=s, price=m.price, volatility=m.volatility,
                mark_premium_bps=m.mark_premium_bps, spread_bps=m.spread_bps,
                funding_rate=m.funding_rate, volume_24h=m.volume_24h, depth=m.depth,
                level_bps=m.level_bps, venues=None if m.venues is None else {k: dict(v) for k, v in m.venues.items()})
                for s, m in self.instruments.items()],
            venues=[VenueSpec(
                name=v, basis_bps=vm.basis_bps, maker_fee=vm.fees.maker, taker_fee=vm.fees.taker,
                accounts=[AccountSpec(
                    name=a, position_mode=am.position_mode, balances=dict(am.balances),
                    default_leverage=am.default_leverage, leverage=dict(am.leverage),
                    margin_mode=am.margin_mode,
                    positions=[PositionSpec(symbol=p.symbol, side=p.side, contracts=p.contracts,
                                            entry_price=p.entry_price, leverage=p.leverage,
                                            margin_mode=p.margin_mode)
                               for p in am.positions])
                    for a, am in vm.accounts.items()])
                for v, vm in self.venues.items()],
        )


def _check_references(scenario: Scenario) -> None:
    """Cross-field checks pydantic cannot express: symbols, venues and accounts exist."""
    symbols = set(scenario.instruments)

    def listed(symbol: str, venue: str) -> bool:
        venues = scenario.instruments[symbol].venues
        return venues is None or venue in venues

    for venue, vm in scenario.venues.items():
        for name, account in vm.accounts.items():
            base = f"venues.{venue}.accounts.{name}"
            for i, pos in enumerate(account.positions):
                if pos.symbol not in symbols:
                    raise ScenarioError(f"unknown symbol {pos.symbol!r} (declare it under "
                                        "instruments)", f"{base}.positions.{i}.symbol")
                if not listed(pos.symbol, venue):
                    raise ScenarioError(f"{pos.symbol} is not listed on {venue}",
                                        f"{base}.positions.{i}.symbol")
            for symbol in account.leverage:
                if symbol not in symbols:
                    raise ScenarioError(f"unknown symbol {symbol!r}", f"{base}.leverage")
    for s, step in enumerate(scenario.steps):
        for a, action in enumerate(step.actions):
            body = action.body
            where = f"steps.{s}.actions.{a}.{action.kind}"
            step_symbol: str | None = getattr(body, "symbol", None)
            if step_symbol is not None and step_symbol not in symbols:
                raise ScenarioError(f"unknown symbol {step_symbol!r} (declare it under "
                                    "instruments)", f"{where}.symbol")
            step_venue: str | None = getattr(body, "venue", None)
            if step_venue is None:
                continue
            if action.kind not in ("set_price", "move_price"):
                declared = {str(k): v for k, v in scenario.venues.items()}.get(step_venue)
                if declared is None:
                    raise ScenarioError(f"venue {step_venue!r} is not declared under venues",
                                        f"{where}.venue")
                step_account: str | None = getattr(body, "account", None)
                if step_account is not None and step_account not in declared.accounts:
                    raise ScenarioError(f"account {step_account!r} is not declared for "
                                        f"{step_venue}", f"{where}.account")
            if step_symbol is not None and not listed(step_symbol, step_venue):
                raise ScenarioError(f"{step_symbol} is not listed on {step_venue}",
                                    f"{where}.venue")


def parse_scenario(data: Any, source: str = "<data>") -> Scenario:
    """Validate a decoded scenario document."""
    if not isinstance(data, dict):
        raise ScenarioError("a scenario file must hold a mapping", source=source)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if p != "[key]") or "<root>"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ScenarioError(f"{first['msg']}{more}", loc, source) from None
    try:
        _check_references(scenario)
    except ScenarioError as exc:
        raise ScenarioError(str(exc).split(": ", 1)[-1], exc.field, source) from None
    try:
        Market(scenario.market_spec())  # instruments and positions build
    except (ValueError, ArithmeticError) as exc:
        raise ScenarioError(str(exc), None, source) from None
    return scenario


def scenario_path(name_or_path: str | Path) -> Path:
    """A packaged scenario by name (``calm``) or a file path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    packaged = resources.files(SCENARIO_PACKAGE).joinpath(f"{name_or_path}.yaml")
    return Path(str(packaged))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and validate a scenario (packaged name or path); errors name the field."""
    path = scenario_path(name_or_path)
    if not path.is_file():
        known = ", ".join(list_scenarios())
        raise ScenarioError(f"no scenario {str(name_or_path)!r} (packaged: {known})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {exc}", source=str(path)) from None
    return parse_scenario(data, source=str(path))


def list_scenarios() -> list[str]:
    """Names of the packaged scenarios."""
    folder = resources.files(SCENARIO_PACKAGE)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


# -- player ---------------------------------------------------------------------------------------
class StackLike(Protocol):
    """What the player needs from a simulator stack (see risk_sim.launcher.SimulatorStack)."""

    market: Market

    def simulator(self, name: str) -> Any | None: ...


class ScenarioPlayer:
    """Applies a scenario's initial state and steps to a running stack; deterministic."""

    def __init__(self, stack: StackLike, scenario: Scenario, seed: int | None = None) -> None:
        self.stack = stack
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.index = 0  # steps applied so far
        self.history: list[dict[str, Any]] = []
        self._lock = threading.RLock()

    # -- setup ----------------------------------------------------------------------------------
    def apply_initial(self) -> None:
        """(Re)load the market and the custodian and configuration state of step 0."""
        with self._lock:
            self.stack.market.load(self.scenario.market_spec(self.seed))
            for name in ("binance", "okx", "fireblocks", "slack", "config_service"):
                sim = self.stack.simulator(name)
                if sim is not None and hasattr(sim, "faults"):
                    sim.faults.clear()
            fireblocks = self.stack.simulator("fireblocks")
            if fireblocks is not None:
                self._reset_vaults(fireblocks)
            config = self.stack.simulator("config_service")
            if config is not None:
                for component, document in self.scenario.config_service.items():
                    config.publish(component, document)
            self.index = 0
            self.history = []

    def _reset_vaults(self, fireblocks: Any) -> None:
        wanted: dict[str, dict[str, VaultAssetModel]] = {}
        names: dict[str, str | None] = {}
        for vault in self.scenario.custodian.vaults:
            names[vault.id] = vault.name
            wanted[vault.id] = {a: v if isinstance(v, VaultAssetModel) else
                                VaultAssetModel(total=v) for a, v in vault.assets.items()}
        if hasattr(fireblocks, "reset"):
            fireblocks.reset()
        for existing in fireblocks.vault_accounts():
            vault_id = str(existing.get("id"))
            for asset in existing.get("assets", []):
                if asset.get("id") not in wanted.get(vault_id, {}):
                    fireblocks.remove_vault_asset(vault_id, asset.get("id"))
        for vault_id, assets in wanted.items():
            for asset, amount in assets.items():
                fireblocks.set_vault_balance(vault_id, asset, amount.total,
                                             available=amount.available,
                                             vault_name=names.get(vault_id))

    # -- play -----------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.index >= len(self.scenario.steps)

    def step(self, *, advance: bool | None = None) -> dict[str, Any] | None:
        """Apply the next step; with a manual clock also advance it by the step's duration.

        Returns ``{"index", "label", "duration", "expect", "state"}`` or None when done.
        """
        with self._lock:
            if self.done:
                return None
            step = self.scenario.steps[self.index]
            for action in step.actions:
                self.apply(action)
            market = self.stack.market
            if advance if advance is not None else market.clock.mode == "manual":
                market.advance(step.duration)
            self.index += 1
            record = {"index": self.index, "label": step.label, "duration": step.duration,
                      "expect": dict(step.expect), "state": self.state()}
            self.history.append(record)
            return record

    def play(self, realtime: bool = True, *, speed: float = 1.0,
             on_step: Callable[[dict[str, Any]], None] | None = None,
             stop: threading.Event | None = None) -> list[dict[str, Any]]:
        """Play the remaining steps; ``realtime`` waits each step's duration on the wall."""
        records = []
        market = self.stack.market
        while not self.done and not (stop is not None and stop.is_set()):
            duration = self.scenario.steps[self.index].duration
            record = self.step(advance=False if realtime else None)
            assert record is not None
            records.append(record)
            if on_step is not None:
                on_step(record)
            if realtime and duration > 0:
                deadline = time.monotonic() + duration / speed
                while (left := deadline - time.monotonic()) > 0:
                    pause = min(0.25, left)
                    if stop is not None:
                        if stop.wait(pause):
                            break
                    else:
                        time.sleep(pause)
                    if market.clock.mode == "manual":
                        market.advance(pause * speed)
        return records

    def expected(self) -> dict[str, Any]:
        """``expect`` of the last applied step (empty before the first)."""
        with self._lock:
            return dict(self.scenario.steps[self.index - 1].expect) if self.index else {}

    def state(self) -> dict[str, Any]:
        """The simulators' truth after the steps applied so far (JSON values, deterministic)."""
        with self._lock:
            label = self.scenario.steps[self.index - 1].label if self.index else "initial"
            faults: dict[str, list[dict[str, Any]]] = {}
            for name in ("binance", "okx", "fireblocks", "slack", "config_service"):
                sim = self.stack.simulator(name)
                if sim is not None and hasattr(sim, "faults"):
                    faults[name] = [{k: v for k, v in asdict(f).items() if k != "id"}
                                    for f in sim.faults.snapshot()]
            result: dict[str, Any] = {
                "scenario": self.scenario.name, "seed": self.seed, "step": self.index,
                "label": label, "market": self.stack.market.state(), "faults": faults,
            }
            fireblocks = self.stack.simulator("fireblocks")
            if fireblocks is not None:
                result["custody"] = fireblocks.vault_accounts()
            return result

    # -- actions --------------------------------------------------------------------------------
    def apply(self, action: Action) -> None:
        """Apply one action now (also usable outside steps, e.g. from the control plane)."""
        market = self.stack.market
        kind, body = action.kind, action.body
        if isinstance(body, SetPrice):
            market.set_price(body.symbol, body.price, venue=body.venue)
        elif isinstance(body, MovePrice):
            market.move_price(body.symbol, body.pct, body.over, venue=body.venue)
        elif isinstance(body, PricePathAction):
            market.price_path(body.symbol, [(t, p) for t, p in body.points])
        elif isinstance(body, Volatility):
            market.set_volatility(body.symbol, body.value)
        elif isinstance(body, OrderAction):
            market.place_order(body.venue, body.account, body.symbol, side=body.side,
                               amount=body.amount, order_type=body.type, price=body.price,
                               reduce_only=body.reduce_only, position_side=body.position_side)
        elif isinstance(body, InjectFill):
            market.inject_fill(body.venue, body.account, body.symbol, side=body.side,
                               amount=body.amount, price=body.price,
                               position_side=body.position_side)
        elif isinstance(body, Funding):
            market.settle_funding(body.venue)
        elif isinstance(body, TargetNotional):
            market.target_notional(body.venue, body.account, body.symbol, body.notional,
                                   side=body.side)
        elif isinstance(body, SetPosition):
            market.set_position(body.venue, body.account, body.symbol, side=body.side,
                                contracts=body.contracts, entry_price=body.entry_price)
        elif isinstance(body, SetBalance):
            market.set_balance(body.venue, body.account, body.asset, body.amount)
        elif isinstance(body, VaultBalance):
            self._require("fireblocks", kind).set_vault_balance(
                body.vault, body.asset, body.total, available=body.available,
                vault_name=body.name)
        elif isinstance(body, FaultAction):
            sim = self._require(body.sim, kind)
            sim.faults.add(body.kind, body.route, probability=body.probability,
                           count=body.count, **body.params)
        elif isinstance(body, ClearFaults):
            names = ["binance", "okx", "fireblocks", "slack", "config_service"] \
                if body.sim == "all" else [body.sim]
            for name in names:
                sim = self.stack.simulator(name)
                if sim is None:
                    if body.sim != "all":
                        self._require(name, kind)
                    continue
                sim.faults.clear()
                if hasattr(sim, "accept_ws"):
                    sim.accept_ws()
        elif isinstance(body, WsDisconnect):
            venue = self._require(body.sim, kind)
            refuse: float | None = 0.0
            if body.refuse:
                refuse = None
            elif body.refuse_seconds:
                refuse = body.refuse_seconds
            venue.disconnect_ws(body.route, refuse_seconds=refuse)
        elif isinstance(body, WsAccept):
            self._require(body.sim, kind).accept_ws()
        elif isinstance(body, ClockSkew):
            self._require(body.sim, kind).set_clock_offset(body.seconds)
        elif isinstance(body, RateLimit):
            venue = self._require(body.sim, kind)
            if body.sim == "binance":
                venue.set_weight_limit(body.limit)
            else:
                venue.set_rate_limit(body.limit)
        elif isinstance(body, PublishConfig):
            self._require("config_service", kind).publish(body.component, body.document)
        else:  # pragma: no cover - Action guarantees one of the above
            raise ScenarioError(f"unsupported action {kind}")

    def _require(self, name: str, kind: str) -> Any:
        sim = self.stack.simulator(name)
        if sim is None:
            raise ScenarioError(f"action {kind!r} needs the {name} simulator, which is not "
                                "running in this stack")
        return sim

