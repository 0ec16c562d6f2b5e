"""The mapper on the real error classes of each library it translates."""

from __future__ import annotations

import sqlite3

import ccxt
import psycopg2
import pytest
import redis
import sqlalchemy as sa
from slack_sdk.errors import SlackApiError, SlackClientConfigurationError, SlackRequestError
from slack_sdk.web.slack_response import SlackResponse

from risk_monitor.adapters.errors import map_exception
from risk_monitor.platform import errors as E
from risk_monitor.platform.logging import register_secret


@pytest.mark.parametrize(
    ("exc", "expected", "retryable"),
    [
        (ccxt.RequestTimeout("timed out"), E.SourceUnavailableError, True),
        (ccxt.ExchangeNotAvailable("503"), E.SourceUnavailableError, True),
        (ccxt.OnMaintenance("maintenance"), E.SourceUnavailableError, True),
        (ccxt.NetworkError("reset"), E.SourceUnavailableError, True),
        (ccxt.DDoSProtection("ddos"), E.RateLimitedError, True),
        (ccxt.RateLimitExceeded("429"), E.RateLimitedError, True),
        (ccxt.InvalidNonce("nonce"), E.SourceUnavailableError, True),
        (ccxt.BadResponse("not json"), E.SourceUnavailableError, True),
        (ccxt.AuthenticationError('binanceusdm {"code":-1022}'), E.SourceAuthenticationError, False),
        (ccxt.PermissionDenied("ip"), E.SourcePermissionError, False),
        (ccxt.AccountSuspended("frozen"), E.SourcePermissionError, False),
        (ccxt.BadSymbol("XYZ"), E.SourceRequestError, False),
        (ccxt.BadRequest("params"), E.SourceRequestError, False),
        (ccxt.InsufficientFunds("n/a"), E.DataSourceError, False),
        (ccxt.ExchangeError("other"), E.DataSourceError, False),
    ],
)
def test_ccxt(exc: Exception, expected: type[E.RiskMonitorError], retryable: bool) -> None:
    mapped = map_exception(exc, source="binance", endpoint="fetch_positions")
    assert type(mapped) is expected
    assert mapped.retryable is retryable
    assert mapped.source == "binance"
    assert mapped.details["endpoint"] == "fetch_positions"
    assert mapped.details["library_error"] == type(exc).__name__


def test_ccxt_async_errors_share_the_tree() -> None:
    import ccxt.async_support as accxt

    assert type(map_exception(accxt.RequestTimeout("x"), source="okx")) is E.SourceUnavailableError


@pytest.mark.parametrize(
    ("status", "expected", "retryable"),
    [
        (400, E.SourceRequestError, False),
        (401, E.SourceAuthenticationError, False),
        (403, E.SourcePermissionError, False),
        (404, E.SourceRequestError, False),
        (429, E.RateLimitedError, True),
        (500, E.SourceUnavailableError, True),
        (503, E.SourceUnavailableError, True),
    ],
)
def test_fireblocks(status: int, expected: type[E.RiskMonitorError], retryable: bool) -> None:
    from fireblocks import exceptions as fb

    cls = {401: fb.UnauthorizedException, 403: fb.ForbiddenException,
           404: fb.NotFoundException, 400: fb.BadRequestException}.get(status, fb.ApiException)
    if status >= 500:
        cls = fb.ServiceException
    mapped = map_exception(cls(status=status, reason="r"), source="fireblocks")
    assert type(mapped) is expected
    assert mapped.retryable is retryable
    assert mapped.details["http_status"] == status


def test_fireblocks_model_errors_are_validation_errors() -> None:
    from fireblocks import exceptions as fb

    mapped = map_exception(fb.ApiValueError("amount must be a string"), source="fireblocks")
    assert type(mapped) is E.DataValidationError


def _slack_response(data: dict[str, object], status: int, headers: dict[str, str] | None = None
                    ) -> SlackResponse:
    return SlackResponse(client=None, http_verb="POST", api_url="http://x/api/chat.postMessage",
                         req_args={}, data=data, headers=headers or {}, status_code=status)


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "channel_not_found",
                                   "not_in_channel", "missing_scope"])
def test_slack_configuration_errors_are_kept_for_retry(error: str) -> None:
    """A revoked token or a wrong channel is an operator's fix, not a reason to drop an alert."""
    exc = SlackApiError("failed", _slack_response({"ok": False, "error": error}, 200))
    mapped = map_exception(exc, source="slack")
    assert type(mapped) is E.NotifierConfigError
    assert mapped.retryable
    assert mapped.details["slack_error"] == error


@pytest.mark.parametrize("error", ["invalid_blocks", "msg_too_long"])
def test_slack_message_errors_are_rejected_for_good(error: str) -> None:
    exc = SlackApiError("failed", _slack_response({"ok": False, "error": error}, 200))
    mapped = map_exception(exc, source="slack")
    assert type(mapped) is E.NotificationRejectedError
    assert not mapped.retryable


def test_slack_rate_limit_is_retryable_with_retry_after() -> None:
    exc = SlackApiError("limited", _slack_response({"ok": False, "error": "ratelimited"}, 429,
                                                   {"Retry-After": "7"}))
    mapped = map_exception(exc, source="slack")
    assert type(mapped) is E.NotificationError and mapped.retryable
    assert mapped.details["retry_after"] == "7"


def test_slack_server_and_transport_errors_are_retryable() -> None:
    exc = SlackApiError("boom", _slack_response({"ok": False, "error": "internal_error"}, 500))
    assert map_exception(exc, source="slack").retryable
    assert map_exception(SlackRequestError("conn reset"), source="slack").retryable
    # a client without a token is an operator's fix: kept and retried, never dropped
    assert type(map_exception(SlackClientConfigurationError("no token"), source="slack")) \
        is E.NotifierConfigError


def test_redis() -> None:
    assert type(map_exception(redis.exceptions.ConnectionError("refused"), source="redis")) \
        is E.StorageUnavailableError
    assert type(map_exception(redis.exceptions.TimeoutError("slow"), source="redis")) \
        is E.StorageUnavailableError
    assert type(map_exception(redis.exceptions.ResponseError("WRONGTYPE"), source="redis")) \
        is E.StorageError
    assert not map_exception(redis.exceptions.ResponseError("x"), source="redis").retryable


def test_redis_real_connection_refused() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(redis.RedisError) as info:
        client.ping()
    assert map_exception(info.value, source="redis").retryable


def test_psycopg2_real_connection_failure_is_retryable() -> None:
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect("host=127.0.0.1 port=1 connect_timeout=1 dbname=x")
    mapped = map_exception(info.value, source="postgres")
    assert type(mapped) is E.StorageUnavailableError and mapped.retryable


def test_sqlalchemy_wrapping_is_unwrapped() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    with pytest.raises(sa.exc.IntegrityError) as info, engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    mapped = map_exception(info.value, source="sqlite")
    assert type(mapped) is E.StorageIntegrityError and not mapped.retryable
    assert mapped.details["sqlalchemy_error"] == "IntegrityError"
    assert isinstance(info.value.orig, sqlite3.IntegrityError)


def test_sqlalchemy_operational_error_on_postgres_is_retryable() -> None:
    engine = sa.create_engine("postgresql+psycopg2://x@127.0.0.1:1/x",
                              connect_args={"connect_timeout": 1})
    with pytest.raises(sa.exc.OperationalError) as info:
        engine.connect()
    assert type(map_exception(info.value, source="postgres")) is E.StorageUnavailableError


def test_plain_python_errors() -> None:
    assert map_exception(TimeoutError(), source="x").retryable
    assert map_exception(ConnectionResetError(), source="x").retryable
    assert type(map_exception(ValueError("nan"), source="x")) is E.DataValidationError
    ours = E.StaleDataError("old", source="okx")
    assert map_exception(ours, source="other") is ours


def test_messages_are_redacted() -> None:
    register_secret("venue-secret-value-42")
    exc = ccxt.AuthenticationError(
        "GET https://fapi/v3/account?timestamp=1&signature=abcdef0123 key venue-secret-value-42")
    message = map_exception(exc, source="binance").message
    assert "venue-secret-value-42" not in message
    assert "abcdef0123" not in message


def test_urllib3_timeouts_under_the_fireblocks_sdk_are_retryable() -> None:
    import urllib3

    pool = urllib3.HTTPConnectionPool("127.0.0.1", port=1, timeout=0.5, retries=False)
    with pytest.raises(urllib3.exceptions.HTTPError) as info:
        pool.request("GET", "/v1/vault/accounts_paged")
    mapped = map_exception(info.value, source="fireblocks")
    assert type(mapped) is E.SourceUnavailableError and mapped.retryable
    wrapped = urllib3.exceptions.MaxRetryError(pool, "/v1", reason=info.value)
    assert map_exception(wrapped, source="fireblocks").retryable
