"""Unit rules of service/security.py and service/validation.py (no servers): token matching,
the stream limiter on an injected clock, loopback detection, bounded log values."""

from __future__ import annotations

from pathlib import Path

import pytest

from risk_monitor.platform.errors import ConfigError
from risk_monitor.platform.settings import ServiceSettings
from risk_monitor.service import validation
from risk_monitor.service.security import (
    Authenticator,
    ServiceSecurity,
    StreamLimiter,
    check_exposure,
    is_loopback,
    peer_host,
)

TOKEN = "a-long-enough-token-0001"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bearer_tokens_match_exactly_and_name_their_variable() -> None:
    auth = Authenticator({"RM_TOKEN_A": TOKEN, "RM_TOKEN_B": TOKEN[::-1]})
    assert auth.identify(f"Bearer {TOKEN}") == "RM_TOKEN_A"
    assert auth.identify(f"bearer  {TOKEN[::-1]} ") == "RM_TOKEN_B"
    for bad in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ",
                f"Bearer {TOKEN[:-1]}", "Bearer \u00e9\u00e9"):
        assert auth.identify(bad) is None, bad
    session = auth.session_value("RM_TOKEN_A")
    assert TOKEN not in session and auth.identify_session(session) == "RM_TOKEN_A"
    assert auth.identify_session("0" * 64) is None
    assert not Authenticator({}).enabled


def test_tokens_are_read_from_the_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RM_UNIT_TOKEN", TOKEN)
    assert Authenticator.from_env(["RM_UNIT_TOKEN"]).identify(f"Bearer {TOKEN}")
    monkeypatch.setenv("RM_UNIT_TOKEN", "short")
    with pytest.raises(ConfigError, match="shorter"):
        Authenticator.from_env(["RM_UNIT_TOKEN"])
    monkeypatch.delenv("RM_UNIT_TOKEN")
    with pytest.raises(ConfigError, match="RM_UNIT_TOKEN"):
        Authenticator.from_env(["RM_UNIT_TOKEN"])


def test_stream_limiter_caps_open_streams_per_client() -> None:
    limiter = StreamLimiter(max_open=2, per_minute=100, clock=Clock())
    assert limiter.acquire("a") is None and limiter.acquire("a") is None
    assert "too many open streams" in (limiter.acquire("a") or "")
    assert limiter.acquire("b") is None  # another client is not affected
    limiter.release("a")
    assert limiter.acquire("a") is None
    assert "too many open streams" in (limiter.acquire("a") or "")  # two open again


def test_stream_limiter_refills_opens_over_time() -> None:
    clock = Clock()
    limiter = StreamLimiter(max_open=100, per_minute=3, clock=clock)
    for _ in range(3):
        assert limiter.acquire("a") is None
        limiter.release("a")
    assert "rate-limited" in (limiter.acquire("a") or "")
    clock.now += 20.0  # one token back (3 a minute)
    assert limiter.acquire("a") is None
    assert "rate-limited" in (limiter.acquire("a") or "")


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "risk-monitor.internal", ""):
        assert not is_loopback(host), host
    assert peer_host("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert peer_host("ipv6:[::1]:5555") == "::1"
    assert peer_host("unix:/tmp/x") == "unix:/tmp/x"


def test_exposure_needs_auth_or_insecure() -> None:
    exposed = ServiceSettings(grpc_host="0.0.0.0")
    with pytest.raises(ConfigError) as info:
        check_exposure(exposed, Authenticator({}), insecure=False)
    assert info.value.key == "service.auth.token_envs" and "service.grpc_host" in info.value.message
    check_exposure(exposed, Authenticator({}), insecure=True)
    check_exposure(exposed, Authenticator({"T": TOKEN}), insecure=False)
    check_exposure(ServiceSettings(), Authenticator({}), insecure=False)  # loopback


def test_tls_files_must_exist_and_be_pem(tmp_path: Path) -> None:
    base = tmp_path
    (base / "cert.pem").write_text("not a certificate")
    for cert, key in ((base / "missing.pem", base / "missing.key"),
                      (base / "cert.pem", base / "cert.pem")):
        settings = ServiceSettings.model_validate({"tls": {"cert_file": cert, "key_file": key}})
        with pytest.raises(ConfigError) as info:
            ServiceSecurity.from_settings(settings)
        assert info.value.key == "service.tls.cert_file"


def test_token_env_names_are_validated() -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        ServiceSettings.model_validate({"auth": {"token_envs": ["not a name"]}})
    with pytest.raises(ValueError):
        ServiceSettings.model_validate({"auth": {"open_paths": ["/v1/risk/status"]}})


def test_loggable_bounds_and_cleans_request_values() -> None:
    assert validation.loggable(None) is None
    assert validation.loggable("abc") == "abc"
    assert validation.loggable("a\nb\x00") == "a?b?"
    long = validation.loggable("x" * 1_000_000)
    assert long == "x" * 64 + "...(+999936 chars)"


def test_heartbeat_rules() -> None:
    assert validation.heartbeat("h", 0.0, 15.0) == 15.0
    assert validation.heartbeat("h", 0.001, 15.0) == validation.MIN_HEARTBEAT_S
    assert validation.heartbeat("h", 1e9, 15.0) == validation.MAX_HEARTBEAT_S
    for bad in (float("nan"), float("inf"), -0.5):
        with pytest.raises(validation.DataValidationError):
            validation.heartbeat("h", bad, 15.0)
