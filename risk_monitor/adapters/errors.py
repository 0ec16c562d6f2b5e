"""Map errors of ccxt, fireblocks, slack-sdk, redis, SQLAlchemy and psycopg2 to ours.

The mapper decides *retryable or not* in one place, so retry policies never guess. It matches
on class names along the exception's MRO (qualified by the library's module) instead of
importing the libraries, because importing fireblocks costs ~3 s and ccxt.pro ~1 s: a mapper
must be cheap to import everywhere. Messages are redacted: library messages often echo signed
URLs or request headers.
"""

from __future__ import annotations

import contextlib
import functools
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

#: ccxt class name -> our class; the first hit along the exception's MRO wins (most specific)
_CCXT: dict[str, type[RiskMonitorError]] = {
    **dict.fromkeys(("RateLimitExceeded", "DDoSProtection"), RateLimitedError),
    # InvalidNonce: clock drift, a later retry re-signs with a new nonce
    **dict.fromkeys(("RequestTimeout", "OnMaintenance", "ExchangeNotAvailable", "InvalidNonce",
                     "NetworkError", "NullResponse", "BadResponse", "OperationFailed"),
                    SourceUnavailableError),
    **dict.fromkeys(("PermissionDenied", "AccountSuspended"), SourcePermissionError),
    "AuthenticationError": SourceAuthenticationError,
    **dict.fromkeys(("BadSymbol", "BadRequest", "ArgumentsRequired", "NotSupported"),
                    SourceRequestError),
    **dict.fromkeys(("ExchangeError", "BaseError"), DataSourceError),
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
    classes = type(exc).__mro__
    modules = tuple(cls.__module__ or "" for cls in classes)
    kinds = {cls.__name__ for cls in classes}
    details: dict[str, Any] = {"library_error": type(exc).__name__}
    if endpoint:
        details["endpoint"] = endpoint
    message = _message(exc)

    def mapped(target: type[RiskMonitorError]) -> RiskMonitorError:
        return target(message, source=source, details=details)

    def from_(prefix: str) -> bool:
        return any(module.startswith(prefix) for module in modules)

    if from_("ccxt"):  # sync and async share the class tree in ccxt.base.errors
        for cls in classes:
            if cls.__name__ in _CCXT:
                return mapped(_CCXT[cls.__name__])

    if from_("fireblocks"):  # ApiException with an HTTP status
        status = _http_status(exc)
        if status is not None:
            details["http_status"] = status
        if status is not None and status >= 500:
            return mapped(SourceUnavailableError)
        if status in _FIREBLOCKS_STATUS:
            return mapped(_FIREBLOCKS_STATUS[status])
        if kinds & {"ApiTypeError", "ApiValueError", "ApiAttributeError", "ApiKeyError"}:
            return mapped(DataValidationError)
        return mapped(DataSourceError)

    if from_("slack_sdk"):
        status = _http_status(exc)
        response = getattr(exc, "response", None)
        error = None
        with contextlib.suppress(Exception):
            error = response.get("error") if response is not None else None
        if status is not None:
            details["http_status"] = status
        if error:
            details["slack_error"] = error
        if status == 429 or error == "ratelimited":
            headers = getattr(response, "headers", None) or {}
            details["retry_after"] = headers.get("Retry-After") or headers.get("retry-after")
            return mapped(NotificationError)
        if error in _SLACK_CONFIG:
            return mapped(NotifierConfigError)
        if error in _SLACK_FATAL:
            return mapped(NotificationRejectedError)
        if kinds & {"SlackClientConfigurationError", "SlackTokenRotationError",
                    "BotUserAccessError"}:
            return mapped(NotifierConfigError)
        if "SlackObjectFormationError" in kinds:
            return mapped(NotificationRejectedError)
        return mapped(NotificationError)

    if from_("redis"):
        return mapped(StorageUnavailableError if kinds & _REDIS_UNAVAILABLE else StorageError)

    if from_("sqlalchemy"):  # it wraps the DBAPI error; look at both
        orig = getattr(exc, "orig", None)
        if getattr(exc, "connection_invalidated", False):
            return mapped(StorageUnavailableError)
        if orig is not None and not isinstance(orig, type(exc)):
            inner = map_exception(orig, source=source, endpoint=endpoint)
            inner.details.setdefault("sqlalchemy_error", type(exc).__name__)
            return inner
        if "IntegrityError" in kinds:
            return mapped(StorageIntegrityError)
        if kinds & {"TimeoutError", "DisconnectionError", "OperationalError"}:
            return mapped(StorageUnavailableError)
        return mapped(StorageError)

    if from_("psycopg2") or from_("sqlite3"):  # DBAPI drivers share PEP 249 names
        pgcode = getattr(exc, "pgcode", None)
        if pgcode:
            details["pgcode"] = pgcode
        if "IntegrityError" in kinds:
            return mapped(StorageIntegrityError)
        # class 08 = connection exception, 57P = operator intervention, 40001/40P01 = retry txn
        if kinds & {"OperationalError", "InterfaceError"} or (
            pgcode and (pgcode.startswith(("08", "57P")) or pgcode in ("40001", "40P01"))
        ):
            return mapped(StorageUnavailableError)
        return mapped(StorageError)

    # urllib3 (under the fireblocks SDK and slack-sdk's sync client): timeouts, refused
    # connections and broken responses after the library's own retries; OSError covers the
    # plain Python / asyncio network failures (ConnectionError, TimeoutError, socket.timeout)
    if (from_("urllib3") and kinds & _URLLIB3_TRANSIENT) or isinstance(exc, OSError):
        return mapped(SourceUnavailableError)
    if isinstance(exc, ValueError | TypeError | KeyError):
        return mapped(DataValidationError)
    return mapped(RiskMonitorError)


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
