"""Map errors of ccxt, fireblocks, slack-sdk, redis, SQLAlchemy and psycopg2 to ours.

The mapper decides *retryable or not* in one place, so retry policies never guess. It matches
on class names along the exception's MRO (qualified by the library's module) instead of
importing the libraries, because importing fireblocks costs ~3 s and ccxt.pro ~1 s: a mapper
must be cheap to import everywhere. Messages are redacted: library messages often echo signed
URLs or request headers.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import socket
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from risk_monitor.platform.errors import (
    DataSourceError,
    DataValidationError,
    NotificationError,
    NotificationRejectedError,
    NotifierConfigError,
    RateLimitedError,
    RiskMonitorError,
    SourceAuthenticationError,
    SourcePermissionError,
    SourceRequestError,
    SourceUnavailableError,
    StorageError,
    StorageIntegrityError,
    StorageUnavailableError,
)
from risk_monitor.platform.logging import redact_text

P = ParamSpec("P")
R = TypeVar("R")

# (module prefix, class name) -> our class, most specific first: the first MRO hit wins.
_CCXT: dict[str, type[RiskMonitorError]] = {
    "RateLimitExceeded": RateLimitedError,
    "DDoSProtection": RateLimitedError,
    "RequestTimeout": SourceUnavailableError,
    "OnMaintenance": SourceUnavailableError,
    "ExchangeNotAvailable": SourceUnavailableError,
    "InvalidNonce": SourceUnavailableError,  # clock drift: a later retry re-signs with a new nonce
    "NetworkError": SourceUnavailableError,
    "NullResponse": SourceUnavailableError,
    "BadResponse": SourceUnavailableError,
    "PermissionDenied": SourcePermissionError,
    "AccountSuspended": SourcePermissionError,
    "AuthenticationError": SourceAuthenticationError,
    "BadSymbol": SourceRequestError,
    "BadRequest": SourceRequestError,
    "ArgumentsRequired": SourceRequestError,
    "NotSupported": SourceRequestError,
    "ExchangeError": DataSourceError,
    "OperationFailed": SourceUnavailableError,
    "BaseError": DataSourceError,
}

_FIREBLOCKS_STATUS: dict[int, type[RiskMonitorError]] = {
    400: SourceRequestError, 401: SourceAuthenticationError, 403: SourcePermissionError,
    404: SourceRequestError, 409: SourceRequestError, 422: SourceRequestError,
    429: RateLimitedError}

#: Slack errors an operator fixes (token, scopes, channels): the alert waits and is retried
_SLACK_CONFIG = {"invalid_auth", "not_authed", "account_inactive", "token_revoked",
                 "token_expired", "no_permission", "missing_scope", "channel_not_found",
                 "is_archived", "not_in_channel", "restricted_action", "team_access_not_granted"}
#: Slack errors about the message itself: sending it again cannot succeed
_SLACK_FATAL = {"invalid_blocks", "msg_too_long", "message_not_found", "cant_update_message"}

_REDIS_UNAVAILABLE = {"ConnectionError", "TimeoutError", "BusyLoadingError", "TryAgainError",
                      "MasterDownError", "MaxConnectionsError", "ClusterDownError"}
_URLLIB3_TRANSIENT = {"MaxRetryError", "TimeoutError", "ProtocolError", "NewConnectionError",
                      "ReadTimeoutError", "ConnectTimeoutError", "HTTPError"}


def _from(names: list[tuple[str, str]], prefix: str) -> bool:
    return any(module.startswith(prefix) for module, _ in names)


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if len(text) > 500:
        text = text[:500] + "…"
    return redact_text(f"{type(exc).__name__}: {text}")


def _http_status(exc: BaseException) -> int | None:
    for attr in ("status", "status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def map_exception(exc: BaseException, *, source: str, endpoint: str | None = None) -> RiskMonitorError:
    """Translate any exception into our hierarchy, keeping retryability explicit."""
    if isinstance(exc, RiskMonitorError):
        return exc
    names = [(cls.__module__ or "", cls.__name__) for cls in type(exc).__mro__]
    details: dict[str, Any] = {"library_error": type(exc).__name__}
    if endpoint:
        details["endpoint"] = endpoint
    message = _message(exc)

    # ccxt (sync and async share the class tree in ccxt.base.errors)
    if _from(names, "ccxt"):
        for _, name in names:
            target = _CCXT.get(name)
            if target is not None:
                return target(message, source=source, details=details)

    # fireblocks SDK: ApiException with an HTTP status
    if _from(names, "fireblocks"):
        status = _http_status(exc)
        if status is not None:
            details["http_status"] = status
        if status is not None and status >= 500:
            return SourceUnavailableError(message, source=source, details=details)
        if status in _FIREBLOCKS_STATUS:
            return _FIREBLOCKS_STATUS[status](message, source=source, details=details)
        if any(n in ("ApiTypeError", "ApiValueError", "ApiAttributeError", "ApiKeyError")
               for _, n in names):
            return DataValidationError(message, source=source, details=details)
        return DataSourceError(message, source=source, details=details)

    # slack-sdk
    if _from(names, "slack_sdk"):
        status = _http_status(exc)
        response = getattr(exc, "response", None)
        error = None
        if response is not None:
            try:
                error = response.get("error")
            except Exception:
                error = None
        if status is not None:
            details["http_status"] = status
        if error:
            details["slack_error"] = error
        if status == 429 or error == "ratelimited":
            headers = getattr(response, "headers", None) or {}
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
            details["retry_after"] = retry_after
            return NotificationError(message, source=source, details=details)
        if error in _SLACK_CONFIG:
            return NotifierConfigError(message, source=source, details=details)
        if error in _SLACK_FATAL:
            return NotificationRejectedError(message, source=source, details=details)
        if any(n in ("SlackClientConfigurationError", "SlackTokenRotationError",
                     "BotUserAccessError") for _, n in names):
            return NotifierConfigError(message, source=source, details=details)
        if any(n == "SlackObjectFormationError" for _, n in names):
            return NotificationRejectedError(message, source=source, details=details)
        return NotificationError(message, source=source, details=details)

    # redis-py
    if _from(names, "redis"):
        if any(n in _REDIS_UNAVAILABLE for _, n in names):
            return StorageUnavailableError(message, source=source, details=details)
        if any(n in ("AuthenticationError", "AuthorizationError", "NoPermissionError")
               for _, n in names):
            return StorageError(message, source=source, details=details)
        return StorageError(message, source=source, details=details)

    # SQLAlchemy wraps the DBAPI error; look at both
    if _from(names, "sqlalchemy"):
        orig = getattr(exc, "orig", None)
        if getattr(exc, "connection_invalidated", False):
            return StorageUnavailableError(message, source=source, details=details)
        if orig is not None and not isinstance(orig, type(exc)):
            mapped = map_exception(orig, source=source, endpoint=endpoint)
            mapped.details.setdefault("sqlalchemy_error", type(exc).__name__)
            return mapped
        if any(n in ("TimeoutError", "DisconnectionError") for _, n in names):
            return StorageUnavailableError(message, source=source, details=details)
        if any(n == "IntegrityError" for _, n in names):
            return StorageIntegrityError(message, source=source, details=details)
        if any(n == "OperationalError" for _, n in names):
            return StorageUnavailableError(message, source=source, details=details)
        return StorageError(message, source=source, details=details)

    # DBAPI drivers (psycopg2, sqlite3) share PEP 249 names
    if _from(names, "psycopg2") or _from(names, "sqlite3"):
        pgcode = getattr(exc, "pgcode", None)
        if pgcode:
            details["pgcode"] = pgcode
        if any(n == "IntegrityError" for _, n in names):
            return StorageIntegrityError(message, source=source, details=details)
        # class 08 = connection exception, 57P = operator intervention, 40001/40P01 = retry txn
        if any(n in ("OperationalError", "InterfaceError") for _, n in names) or (
            pgcode and (pgcode.startswith(("08", "57P")) or pgcode in ("40001", "40P01"))
        ):
            return StorageUnavailableError(message, source=source, details=details)
        return StorageError(message, source=source, details=details)

    # urllib3 (under the fireblocks SDK and slack-sdk's sync client): timeouts, refused
    # connections and broken responses after the library's own retries
    if _from(names, "urllib3") and any(n in _URLLIB3_TRANSIENT for _, n in names):
        return SourceUnavailableError(message, source=source, details=details)

    # plain Python / asyncio network failures
    if isinstance(exc, asyncio.TimeoutError | builtins.TimeoutError | socket.timeout):
        return SourceUnavailableError(message, source=source, details=details)
    if isinstance(exc, ConnectionError | OSError):
        return SourceUnavailableError(message, source=source, details=details)
    if isinstance(exc, ValueError | TypeError | KeyError):
        return DataValidationError(message, source=source, details=details)
    return RiskMonitorError(message, source=source, details=details)


def with_retry_after(error: RiskMonitorError, headers: Any) -> RiskMonitorError:
    """A rate limit without a ``retry_after`` takes the answer's ``Retry-After`` header (seconds),
    when there is one and it reads as a number."""
    if isinstance(error, RateLimitedError) and error.retry_after is None:
        raw = next((v for k, v in dict(headers or {}).items()
                    if str(k).lower() == "retry-after"), None)
        with contextlib.suppress(TypeError, ValueError):
            error.retry_after = float(raw) if raw is not None else None
        if error.retry_after is not None:
            error.details["retry_after"] = error.retry_after
    return error


def typed_parser(parse: Callable[P, R]) -> Callable[P, R]:
    """Make a payload parser raise only our errors: anything but a :class:`RiskMonitorError`
    (an OverflowError from an infinite timestamp, a decimal overflow, an AttributeError on an
    unexpected shape) becomes a :class:`DataValidationError` naming the parser. The parsers
    still validate what they know; this is the guarantee for what nobody foresaw."""

    @functools.wraps(parse)
    def parsed(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return parse(*args, **kwargs)
        except RiskMonitorError:
            raise
        except Exception as exc:
            raise DataValidationError(
                f"{parse.__name__}: payload not understood ({_message(exc)[:300]})",
                details={"parser": parse.__name__, "error": type(exc).__name__}) from exc

    return parsed
