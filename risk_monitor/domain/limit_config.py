"""Limits as configuration: kinds, the validated schema, its content-hash version, and the one
classification of a value against its levels (the status rule both evaluation paths use).

The YAML document (risk_monitor/config/limits.yaml, or the configuration service) is read
outside the domain and arrives here as a mapping. :func:`load_limit_config` validates it and
raises :class:`ConfigError` naming every offending field (``limits[3].warn: ...``). The version
is the sha256 of a canonical JSON of the *validated* document, so key order and YAML
formatting do not change it while any level, scope or kind does. Kinds are described in
docs/limits.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from risk_monitor.domain.aggregation import Needs
from risk_monitor.domain.model import LimitStatus
from risk_monitor.domain.scopes import SCOPE_DIMS
from risk_monitor.domain.valuation import DEFAULT_STABLECOINS
from risk_monitor.platform.errors import ConfigError

#: Utilisation reported when a lower-is-worse value reaches 0 (e.g. mark at the liquidation
#: price): breach / 0 is unbounded, and JSON, SQL and Slack all prefer a finite number.
UTILISATION_CAP = 1000.0
VERSION_LENGTH = 16


class LimitKind(StrEnum):
    MAX_NOTIONAL = "max_notional"
    GROSS_EXPOSURE = "gross_exposure"
    NET_EXPOSURE = "net_exposure"
    COUNTERPARTY = "counterparty"
    CONCENTRATION = "concentration"
    LEVERAGE = "leverage"
    DAILY_LOSS = "daily_loss"
    DRAWDOWN = "drawdown"
    LIQUIDATION_DISTANCE = "liquidation_distance"
    DATA_AGE = "data_age"


@dataclass(frozen=True)
class KindSpec:
    """What a limit kind measures, in which unit, over which scopes."""

    kind: LimitKind
    unit: str
    lower_is_worse: bool
    allowed: frozenset[str]  # scope keys it accepts
    required: frozenset[str]  # scope keys it needs
    needs: Needs
    measures: str  # one-line description for docs and messages


_ALL = frozenset(SCOPE_DIMS)
_POS = Needs(positions=True)
_EXPOSURE = Needs(positions=True, holdings=True)

KIND_SPECS: dict[LimitKind, KindSpec] = {
    s.kind: s
    for s in (
        KindSpec(LimitKind.MAX_NOTIONAL, "USD", False, _ALL, frozenset(), _POS,
                 "gross notional of the derivative positions in scope"),
        KindSpec(LimitKind.GROSS_EXPOSURE, "USD", False, _ALL, frozenset(), _EXPOSURE,
                 "gross exposure: derivative notional + non-stable holdings in scope"),
        KindSpec(LimitKind.NET_EXPOSURE, "USD", False, _ALL, frozenset(), _EXPOSURE,
                 "absolute net exposure: |derivative delta + non-stable holdings| in scope"),
        KindSpec(LimitKind.COUNTERPARTY, "USD", False, frozenset({"venue", "account"}),
                 frozenset({"venue"}), Needs(scope_equity=True),
                 "equity held at the venue: balances + unrealized P&L"),
        KindSpec(LimitKind.CONCENTRATION, "%", False, frozenset({"asset"}), frozenset({"asset"}),
                 Needs(positions=True, holdings=True, portfolio_equity=True),
                 "gross exposure to the asset as % of portfolio equity"),
        KindSpec(LimitKind.LEVERAGE, "x", False, frozenset({"venue", "account"}), frozenset(),
                 Needs(positions=True, holdings=True, scope_equity=True),
                 "gross exposure / equity in scope"),
        KindSpec(LimitKind.DAILY_LOSS, "USD", False, frozenset(), frozenset(),
                 Needs(portfolio_equity=True),
                 "loss since the start of the UTC day: max(0, start-of-day equity - equity)"),
        KindSpec(LimitKind.DRAWDOWN, "%", False, frozenset(), frozenset(),
                 Needs(portfolio_equity=True),
                 "drawdown from peak equity: (peak - equity) / peak * 100"),
        KindSpec(LimitKind.LIQUIDATION_DISTANCE, "%", True, _ALL, frozenset(), _POS,
                 "smallest |mark - liquidation| / mark * 100 over positions in scope"),
        KindSpec(LimitKind.DATA_AGE, "s", False, frozenset({"venue"}), frozenset({"venue"}),
                 Needs(), "age in seconds of the oldest input from the venue"),
    )
}

_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"

#: Sanity ceilings of warn / breach levels per unit: a level past one is a typo (1e308 USD
#: never breaches, so the limit would watch nothing), not a risk appetite.
MAX_LEVEL_BY_UNIT: dict[str, float] = {
    "USD": 1e13,  # ten trillion dollars
    "%": 10_000.0,  # concentration may pass 100 % on leverage
    "x": 1_000.0,  # leverage
    "s": 7 * 86_400.0,  # data age: a week
}
#: tighter ceilings where the unit's one is still meaningless
MAX_LEVEL_BY_KIND: dict[LimitKind, float] = {LimitKind.DRAWDOWN: 100.0}
MAX_NAME_LENGTH = 128
MAX_TEXT_LENGTH = 2_000
MAX_LIMITS = 10_000


def max_level(kind: LimitKind) -> float:
    return MAX_LEVEL_BY_KIND.get(kind, MAX_LEVEL_BY_UNIT[KIND_SPECS[kind].unit])


def _unset(value: object) -> bool:
    return value is None or value == ""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitScope(_Model):
    """Scope selector; each key restricts, '*' expands to one result per value, absent = any."""

    venue: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    account: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    instrument: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    asset: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)

    @field_validator("asset")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        if value is not None and value != value.upper():
            raise ValueError(f"must be upper case (currency code), got {value!r}")
        return value

    @field_validator("venue", "account", "instrument", "asset")
    @classmethod
    def _no_separator(cls, value: str | None) -> str | None:
        if value is not None and "|" in value:
            raise ValueError("must not contain '|'")
        return value

    def items(self) -> dict[str, str]:
        return {d: v for d in SCOPE_DIMS if (v := getattr(self, d)) is not None}


class LimitDefinition(_Model):
    """One limit: a kind, a scope selector and warn / breach levels."""

    id: str = Field(pattern=_ID_PATTERN, description="stable id; part of the alert fingerprint")
    kind: LimitKind
    scope: LimitScope = Field(default_factory=LimitScope)
    breach: float = Field(gt=0, allow_inf_nan=False)
    warn: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    description: str = Field(default="", max_length=MAX_TEXT_LENGTH)
    # alerting (all optional; None = the settings' alerts.* value)
    # (left out of the canonical document when unset, so existing versions keep their hash)
    for_s: float | None = Field(
        default=None, ge=0, le=7 * 86400, allow_inf_nan=False, exclude_if=_unset,
        description="pending before a new episode fires (Prometheus `for`), seconds")
    keep_firing_for_s: float | None = Field(
        default=None, ge=0, le=7 * 86400, allow_inf_nan=False, exclude_if=_unset,
        description="an episode resolves only after this long OK, seconds")
    hysteresis: float | None = Field(
        default=None, ge=0, lt=1, allow_inf_nan=False, exclude_if=_unset,
        description="clear only once the value is this fraction of the breach level past "
        "its level")
    owner: str = Field(default="", max_length=MAX_TEXT_LENGTH, exclude_if=_unset,
                       description="who acts on this limit's alerts")
    runbook_url: str = Field(default="", max_length=MAX_TEXT_LENGTH, exclude_if=_unset,
                             description="what to do, linked from every alert")
    group: str = Field(default="", max_length=MAX_NAME_LENGTH, exclude_if=_unset,
                       description="limit group: the `group` label alert routes and silences "
                       "match on (e.g. custody, derivatives)")

    @field_validator("breach", "warn")
    @classmethod
    def _sane_level(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("kind")
        if value is None or kind is None:
            return value
        ceiling = max_level(kind)
        if value > ceiling:
            unit = KIND_SPECS[kind].unit
            raise ValueError(f"{value:g} {unit} is above the sanity bound of {ceiling:g} {unit} "
                             f"for {kind.value}")
        return value

    @field_validator("scope")
    @classmethod
    def _scope_fits_kind(cls, scope: LimitScope, info: ValidationInfo) -> LimitScope:
        kind = info.data.get("kind")
        if kind is None:
            return scope
        spec = KIND_SPECS[kind]
        keys = set(scope.items())
        extra = sorted(keys - spec.allowed)
        if extra:
            allowed = ", ".join(sorted(spec.allowed)) or "none (portfolio only)"
            raise ValueError(f"{kind.value} does not accept scope key(s) {extra}; allowed: {allowed}")
        missing = sorted(spec.required - keys)
        if missing:
            raise ValueError(f"{kind.value} requires scope key(s) {missing}")
        if scope.instrument is not None and scope.asset is not None:
            raise ValueError("give instrument or asset, not both (an instrument implies its asset)")
        if scope.account is not None and scope.venue is None:
            raise ValueError("account needs a venue (account ids are per venue)")
        return scope

    @field_validator("warn")
    @classmethod
    def _warn_before_breach(cls, warn: float | None, info: ValidationInfo) -> float | None:
        kind, breach = info.data.get("kind"), info.data.get("breach")
        if warn is None or kind is None or breach is None:
            return warn
        if KIND_SPECS[kind].lower_is_worse:
            if warn <= breach:
                raise ValueError(
                    f"must be above breach for {kind.value} (lower is worse): {warn} <= {breach}"
                )
        elif warn >= breach:
            raise ValueError(f"must be below breach: {warn} >= {breach}")
        return warn

    @property
    def spec(self) -> KindSpec:
        return KIND_SPECS[self.kind]


class ValuationConfig(_Model):
    """How assets become USD."""

    stablecoins: list[str] = Field(default_factory=lambda: sorted(DEFAULT_STABLECOINS))
    ignore_assets: list[str] = Field(
        default_factory=list,
        description="assets left out of valuation on purpose (dust, delisted tokens)",
    )
    asset_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="source asset id -> currency it is valued and grouped as, "
        "e.g. Fireblocks USDT_ERC20 -> USDT",
    )


class LimitConfig(_Model):
    """The whole limit document."""

    schema_version: Literal[1] = 1
    description: str = Field(default="", max_length=MAX_TEXT_LENGTH)
    venues: list[str] = Field(
        default_factory=list, max_length=MAX_LIMITS,
        description="venues and custodians the desk expects data from; one absent from a "
        "snapshot makes its scopes UNKNOWN (blind)",
    )
    valuation: ValuationConfig = Field(default_factory=ValuationConfig)
    limits: list[LimitDefinition] = Field(default_factory=list, max_length=MAX_LIMITS)

    _version: str = PrivateAttr(default="")
    _unavailable: str = PrivateAttr(default="")

    @field_validator("limits")
    @classmethod
    def _unique_ids(cls, limits: list[LimitDefinition]) -> list[LimitDefinition]:
        seen: dict[str, int] = {}
        for i, limit in enumerate(limits):
            if limit.id in seen:
                raise ValueError(f"duplicate id {limit.id!r} at limits[{seen[limit.id]}] and limits[{i}]")
            seen[limit.id] = i
        return limits

    def model_post_init(self, context: Any, /) -> None:
        canonical = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        self._version = hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_LENGTH]

    @property
    def version(self) -> str:
        """Content hash of the validated document (first 16 hex of sha256)."""
        return self._version

    @property
    def unavailable(self) -> str:
        """Why this document must not be trusted ("" when it is in force): see fail_closed."""
        return self._unavailable

    def fail_closed(self, reason: str) -> LimitConfig:
        """A copy whose every limit evaluates UNKNOWN with ``reason``: the limits to report on
        are known, the levels in force are not (no silent fallback to a looser document)."""
        copy = self.model_copy()
        copy._version = self._version
        copy._unavailable = reason
        return copy


def load_limit_config(document: Mapping[str, Any] | None) -> LimitConfig:
    """Validate a limit document; ConfigError lists every bad field by its path.

    Any input at all ends as a LimitConfig or a ConfigError (a fuzz suite holds us to it).
    """
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError(f"limit configuration must be a mapping, not "
                          f"{type(document).__name__}", key="(document)")
    try:
        return LimitConfig.model_validate(dict(document))
    except ValidationError as exc:
        problems = [_describe_error(err) for err in exc.errors()]
        first_key = problems[0][0] if problems else None
        message = "invalid limit configuration: " + "; ".join(f"{k}: {m}" for k, m in problems)
        raise ConfigError(message, key=first_key) from None


def _describe_error(err: Mapping[str, Any]) -> tuple[str, str]:
    path = ""
    for part in err.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return path or "(document)", message


# --- classification ----------------------------------------------------------------------------
_LOWER_IS_WORSE = frozenset(k for k, spec in KIND_SPECS.items() if spec.lower_is_worse)


def utilisation(kind: LimitKind, value: float, breach: float) -> float:
    """value / breach; for lower-is-worse kinds breach / value, so >= 1 always means breach."""
    return _utilisation(kind in _LOWER_IS_WORSE, value, breach)


def _utilisation(lower_is_worse: bool, value: float, breach: float) -> float:
    if lower_is_worse:
        if value <= 0:
            return UTILISATION_CAP
        return min(breach / value, UTILISATION_CAP)
    return value / breach


def classify(
    kind: LimitKind, value: float | None, warn: float | None, breach: float
) -> tuple[LimitStatus, float | None]:
    """Status and utilisation of a value against warn/breach levels (None/NaN → UNKNOWN)."""
    if value is None or not math.isfinite(value):
        return LimitStatus.UNKNOWN, None
    lower = kind in _LOWER_IS_WORSE  # once: an enum hashes in Python (once per result)
    used = _utilisation(lower, value, breach)
    if lower:
        if value <= breach:
            return LimitStatus.BREACH, used
        if warn is not None and value <= warn:
            return LimitStatus.WARN, used
        return LimitStatus.OK, used
    if value >= breach:
        return LimitStatus.BREACH, used
    if warn is not None and value >= warn:
        return LimitStatus.WARN, used
    return LimitStatus.OK, used
