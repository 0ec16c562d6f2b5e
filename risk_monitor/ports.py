"""What the use cases, the Dagster assets and the service really call on the world.

Adapters in ``risk_monitor/adapters`` implement these; ``risk_monitor/application`` depends on
the Protocols only (the architecture test forbids it the adapters), so a simulator-backed
adapter, a production one and the in-memory fakes of the tests (``risk_monitor_tests/fakes.py``)
are interchangeable. Exchange and custodian ports expose reads only: no method here can trade,
transfer or withdraw, and none may be added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime
from typing import Any, Protocol

import pandas as pd

from risk_monitor.domain.figures import EquityPoint, MetricValue
from risk_monitor.domain.model import (
    AlertState,
    Collected,
    LimitResult,
    Notification,
    SourceStatus,
)


class ExchangeAccount(Protocol):
    """Read-only view of one exchange account (``CcxtExchangeAccount``)."""

    venue: str
    account: str

    @property
    def endpoint_override(self) -> str | None:
        """A non-production endpoint in use (shown in metadata), None in production."""
        ...

    def fetch_positions(self) -> pd.DataFrame:
        """Open positions as POSITION_COLUMNS; raises a DataSourceError on failure."""
        ...

    def fetch_balances(self) -> pd.DataFrame:
        """Balances as BALANCE_COLUMNS (source_type 'exchange')."""
        ...


class TickerSource(Protocol):
    """What a REST quote snapshot needs from a venue (``CcxtExchangeAccount``)."""

    venue: str

    @property
    def endpoint_override(self) -> str | None: ...

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        """Latest quotes as PRICE_COLUMNS."""
        ...


class Custodian(Protocol):
    """Read-only view of a custodian workspace (``FireblocksCustodian``)."""

    venue: str

    @property
    def endpoint_override(self) -> str | None: ...

    def fetch_balances(self) -> pd.DataFrame:
        """Vault balances as BALANCE_COLUMNS (source_type 'custodian', account = vault id)."""
        ...


class MarketDataSnapshot(Protocol):
    """Latest quotes for configured instruments (REST snapshot or the Redis cache)."""

    def latest_prices(self) -> Collected:
        """Admitted PRICE_COLUMNS rows plus per-venue coverage."""
        ...


class Notifier(Protocol):
    """Delivers one alert notification; returns a delivery reference (e.g. Slack channel:ts)."""

    def send(self, notification: Notification, previous_ref: str | None) -> str:
        """Deliver (or update the message at ``previous_ref``); raises NotificationError."""
        ...


class ConfigSource(Protocol):
    """Versioned configuration documents for a component (the configuration service)."""

    def fetch(self, component: str) -> tuple[str, Mapping[str, Any]]:
        """Return (version, document)."""
        ...

    async def poll(self, component: str, *, after: str | None,
                   wait_s: float) -> tuple[str, Mapping[str, Any]] | None:
        """The first version other than ``after`` within ``wait_s`` (long poll); None when
        none came or nothing is published yet."""
        ...


class ServiceRegistry(Protocol):
    """Service discovery (Redis): one key per instance under ``prefix``."""

    prefix: str

    def register(self, service: str, instance_id: str, info: Mapping[str, Any],
                 ttl_s: float) -> None: ...

    def deregister(self, service: str, instance_id: str) -> None: ...


# --- the risk store, as the use cases (risk_monitor.application) see it --------------------------
class EquityHistory(Protocol):
    """Portfolio equity over time (start of day, peak, drawdown need it)."""

    def start_of_day(self, scope: str, day: date) -> EquityPoint | None: ...

    def peak(self, scope: str) -> EquityPoint | None: ...

    def record(self, points: Sequence[EquityPoint]) -> object: ...


class EvaluationStore(Protocol):
    """The latest evaluation, for the service's API, the dashboard and Prometheus."""

    def upsert_limit_results(self, results: Sequence[LimitResult], *,
                             prune_before: datetime | None = None) -> object: ...

    def replace_metrics(self, metrics: Iterable[MetricValue], as_of: datetime, *,
                        names: Iterable[str] | None = None) -> object: ...

    def record_sources(self, statuses: Sequence[SourceStatus]) -> None: ...


class AppliedAlerts(Protocol):
    @property
    def enqueued(self) -> int: ...


class AlertTransaction(Protocol):
    """The locked states of some alert series and the way to write their next states."""

    states: dict[str, AlertState]

    def apply(self, states: Sequence[AlertState],
              notifications: Sequence[Notification]) -> AppliedAlerts:
        """Write the states and enqueue the notifications."""
        ...

    def seal(self, *, before: Mapping[str, AlertState], states: Sequence[AlertState],
             notifications: Sequence[Notification], context: Mapping[str, Any],
             at: datetime) -> int:
        """Write the audit entries of what this transaction changed."""
        ...


class AlertStore(Protocol):
    """Alert series keyed by fingerprint, written under a lock (both paths agree)."""

    def all_states(self) -> list[AlertState]: ...

    def locked(self, fingerprints: Sequence[str]) -> AbstractContextManager[AlertTransaction]:
        ...


class ComplianceTimeline(Protocol):
    """Saves the status intervals the domain computes (``domain.compliance``)."""

    def record(self, results: Sequence[LimitResult]) -> object: ...


class RiskStore(Protocol):
    """Everything a use case writes an evaluation to (``adapters.sql.Storage``)."""

    @property
    def equity(self) -> EquityHistory: ...

    @property
    def risk_state(self) -> EvaluationStore: ...

    @property
    def alerts(self) -> AlertStore: ...

    @property
    def compliance(self) -> ComplianceTimeline: ...
