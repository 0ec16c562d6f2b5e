"""What the domain and the Dagster assets need from the world, as Protocols.

Adapters in ``risk_monitor/adapters`` implement these; assets and the service depend on the
Protocols only, so a simulator-backed adapter and a production one are the same code with
different configuration. Exchange and custodian ports expose reads only: no method here can
trade, transfer or withdraw, and none may be added.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from risk_monitor.domain.model import AlertState, Collected, Notification


@runtime_checkable
class ExchangeAccount(Protocol):
    """Read-only view of one exchange account."""

    venue: str
    account: str

    def fetch_positions(self) -> pd.DataFrame:
        """Open positions as POSITION_COLUMNS; raises a DataSourceError on failure."""
        ...

    def fetch_balances(self) -> pd.DataFrame:
        """Balances as BALANCE_COLUMNS (source_type 'exchange')."""
        ...


@runtime_checkable
class Custodian(Protocol):
    """Read-only view of a custodian workspace."""

    venue: str

    def fetch_balances(self) -> pd.DataFrame:
        """Vault balances as BALANCE_COLUMNS (source_type 'custodian', account = vault id)."""
        ...


@runtime_checkable
class MarketDataSnapshot(Protocol):
    """Latest quotes for configured instruments (REST snapshot or the Redis cache)."""

    def latest_prices(self) -> Collected:
        """PRICE_COLUMNS plus per-venue coverage."""
        ...


class MarketDataStream(Protocol):
    """A live quote stream (ccxt.pro websockets) for one venue."""

    venue: str

    def quotes(self) -> AsyncIterator[pd.DataFrame]:
        """Yields batches of PRICE_COLUMNS rows as they arrive; reconnects on its own."""
        ...

    async def close(self) -> None: ...


class Notifier(Protocol):
    """Delivers one alert notification; returns a delivery reference (e.g. Slack channel:ts)."""

    def send(self, notification: Notification, previous_ref: str | None) -> str:
        """Deliver (or update the message at ``previous_ref``); raises NotificationError."""
        ...


class AlertStore(Protocol):
    """Alert series state and the durable outbox, in one transaction per evaluation."""

    def load_states(self, fingerprints: Sequence[str]) -> dict[str, AlertState]: ...

    def apply(self, states: Sequence[AlertState], notifications: Sequence[Notification]) -> None:
        """Persist new states and enqueue notifications atomically (idempotent per key)."""
        ...


class AuditLog(Protocol):
    """Append-only record linking alerts to runs, data versions, limit and code versions."""

    def record(self, event: str, at: datetime, correlation_id: str | None,
               payload: Mapping[str, Any]) -> None: ...


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
