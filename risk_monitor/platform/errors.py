"""One error hierarchy with stable codes.

Every failure the risk monitor can meet is one of these classes, so logs, Dagster failure
metadata and the ``risk_monitor_errors_total`` metric all speak the same codes. Codes are
stable: dashboards and runbooks key on them; never renumber, only add.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class RiskMonitorError(Exception):
    """Base of every error the risk monitor raises on purpose."""

    code: ClassVar[str] = "RM000"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        retryable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.retryable = self.default_retryable if retryable is None else retryable
        self.details: dict[str, Any] = dict(details or {})

    def as_metadata(self) -> dict[str, Any]:
        """Fields for Dagster failure metadata, log records and metric labels."""
        return {
            "error_code": self.code,
            "error_class": type(self).__name__,
            "source": self.source or "unknown",
            "retryable": self.retryable,
            "message": self.message,
            **{f"detail_{k}": v for k, v in self.details.items()},
        }

    def __str__(self) -> str:
        where = f" [{self.source}]" if self.source else ""
        return f"{self.code}{where}: {self.message}"


# --- configuration -------------------------------------------------------------------------
class ConfigError(RiskMonitorError):
    """Configuration is missing or invalid; the message names the offending key."""

    code = "RM100"

    def __init__(self, message: str, *, key: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.key = key
        if key is not None:
            self.details.setdefault("key", key)


class ProductionPurityError(ConfigError):
    """A configuration asked for sandbox/testnet mode or an unnamed endpoint."""

    code = "RM101"


# --- data sources ----------------------------------------------------------------------------
class DataSourceError(RiskMonitorError):
    """An exchange, custodian or market-data source failed to answer usefully."""

    code = "RM200"


class SourceUnavailableError(DataSourceError):
    """Network failure, timeout or 5xx: worth retrying."""

    code = "RM201"
    default_retryable = True


class RateLimitedError(DataSourceError):
    """The source answered 429 or an equivalent: retry after backing off."""

    code = "RM202"
    default_retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        if retry_after is not None:
            self.details.setdefault("retry_after", retry_after)


class SourceAuthenticationError(DataSourceError):
    """Credentials were refused; retrying cannot help."""

    code = "RM203"


class SourcePermissionError(DataSourceError):
    """Credentials are valid but lack a permission (read scope, IP whitelist)."""

    code = "RM204"


class SourceRequestError(DataSourceError):
    """The source rejected the request itself (bad symbol, bad parameters)."""

    code = "RM205"


class CircuitOpenError(DataSourceError):
    """The circuit breaker for a source is open; calls are refused until it half-opens."""

    code = "RM206"
    default_retryable = True


# --- data validation -------------------------------------------------------------------------
class DataValidationError(RiskMonitorError):
    """A payload or dataset broke its schema: it must not reach risk."""

    code = "RM300"


class StaleDataError(DataValidationError):
    """Data is older than its freshness budget (or from the future)."""

    code = "RM301"


class MissingDataError(DataValidationError):
    """Data that risk needs is absent; never read as zero exposure."""

    code = "RM302"


# --- notification ----------------------------------------------------------------------------
class NotificationError(RiskMonitorError):
    """Delivering an alert failed; the outbox keeps it for the next attempt."""

    code = "RM400"
    default_retryable = True


class NotificationRejectedError(NotificationError):
    """The notifier refused this message for good (malformed blocks, too long)."""

    code = "RM401"
    default_retryable = False


class NotifierConfigError(NotificationError):
    """The notifier refused our configuration (revoked token, unknown channel): fixable by an
    operator, so the alert stays pending, goes to the fallback sink, and is retried."""

    code = "RM402"
    default_retryable = True


class AlertControlError(NotificationError):
    """An acknowledgement or silence that cannot apply: unknown alert or silence, bad matcher,
    nothing firing to acknowledge. Nothing was written."""

    code = "RM410"


# --- storage ---------------------------------------------------------------------------------
class StorageError(RiskMonitorError):
    """PostgreSQL / SQLite / Redis failed."""

    code = "RM500"


class StorageUnavailableError(StorageError):
    """The store cannot be reached right now (connection refused, timeout)."""

    code = "RM501"
    default_retryable = True


class StorageIntegrityError(StorageError):
    """A constraint was broken: a bug or a concurrent writer, never retried blindly."""

    code = "RM502"


# --- service / discovery ---------------------------------------------------------------------
class ServiceError(RiskMonitorError):
    """The long-running service, discovery or the configuration service failed."""

    code = "RM600"


class DiscoveryError(ServiceError):
    """No healthy instance of a required service was found in the registry."""

    code = "RM601"
    default_retryable = True


class TradingControlError(ServiceError):
    """A trading-state change that cannot apply (bad scope or state, no identity); nothing was
    written."""

    code = "RM610"

