"""What the domain and the Dagster assets need from the world, as Protocols.

Adapters in ``risk_monitor/adapters`` implement these; assets and the service depend on the
Protocols only, so a simulator-backed adapter and a production one are the same code with
different configuration. Exchange and custodian ports expose reads only: no method here can
trade, transfer or withdraw, and none may be added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from risk_monitor.domain.model import Collected, Notification


@runtime_checkable
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


@runtime_checkable
class Custodian(Protocol):
    """Read-only view of a custodian workspace (``FireblocksCustodian``)."""

    venue: str

    @property
    def endpoint_override(self) -> str | None: ...

    def fetch_balances(self) -> pd.DataFrame:
        """Vault balances as BALANCE_COLUMNS (source_type 'custodian', account = vault id)."""
        ...


@runtime_checkable
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


class ServiceRegistry(Protocol):
    """Service discovery (Redis)."""

    def register(self, service: str, instance_id: str, info: Mapping[str, Any],
                 ttl_s: float) -> None: ...

    def deregister(self, service: str, instance_id: str) -> None: ...

    def instances(self, service: str) -> list[Mapping[str, Any]]: ...
