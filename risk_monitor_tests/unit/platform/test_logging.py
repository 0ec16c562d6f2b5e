"""JSON log lines: fields, levels, context, and secrets redacted three ways."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from risk_monitor.platform import logging as rm_logging
from risk_monitor.platform.errors import ConfigError
from risk_monitor.platform.logging import (
    REDACTED,
    configure_logging,
    get_logger,
    log_context,
    redact,
    redact_text,
    register_secret,
)

PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    "-----END PRIVATE KEY-----"
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging("DEBUG", stream=buf, force=True)
    yield buf
    configure_logging("INFO", force=True)


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_every_line_is_json_with_the_standard_fields(stream: io.StringIO) -> None:
    log = get_logger("risk_monitor.test")
    with log_context(correlation_id="corr-1", run_id="run-9"):
        log.info("positions fetched", venue="binance", rows=3)
    record = lines(stream)[-1]
    assert record["event"] == "positions fetched"
    assert record["level"] == "info"
    assert record["logger"] == "risk_monitor.test"
    assert record["correlation_id"] == "corr-1"
    assert record["run_id"] == "run-9"
    assert record["venue"] == "binance" and record["rows"] == 3
    ts = str(record["timestamp"])
    assert ts.endswith("Z") or ts.endswith("+00:00"), ts


def test_context_is_unbound_after_the_block(stream: io.StringIO) -> None:
    log = get_logger("risk_monitor.test")
    with log_context(correlation_id="inside"):
        pass
    log.info("outside")
    assert "correlation_id" not in lines(stream)[-1]


def test_stdlib_loggers_of_libraries_also_emit_json(stream: io.StringIO) -> None:
    logging.getLogger("ccxt.base").warning("venue slow: %s ms", 1200)
    record = lines(stream)[-1]
    assert record["event"] == "venue slow: 1200 ms"
    assert record["logger"] == "ccxt.base"
    assert record["level"] == "warning"


def test_level_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setenv("RISK_MONITOR_LOG_LEVEL", "warning")
    configure_logging(stream=buf, force=True)
    try:
        log = get_logger("risk_monitor.level")
        log.info("hidden")
        log.warning("shown")
    finally:
        configure_logging("INFO", force=True)
    events = [r["event"] for r in lines(buf)]
    assert "shown" in events and "hidden" not in events


def test_bad_level_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        rm_logging.resolve_level("LOUD")
    assert info.value.key == "RISK_MONITOR_LOG_LEVEL"


def test_secrets_redacted_by_key_name(stream: io.StringIO) -> None:
    get_logger("risk_monitor.test").info(
        "client built", api_key="AKIAEXAMPLE", nested={"secret": "s3cr3t", "venue": "okx"},
        api_key_env="BINANCE_KEY",
    )
    record = lines(stream)[-1]
    assert record["api_key"] == REDACTED
    assert record["nested"] == {"secret": REDACTED, "venue": "okx"}
    assert record["api_key_env"] == "BINANCE_KEY"  # the *name* of a variable is not a secret


def test_secrets_redacted_by_value_pattern() -> None:
    text = (
        f"pem={PEM} auth=Bearer abc.def.ghi token xoxb-1234-5678-abcdef "
        "url=https://x/fapi/v3/account?timestamp=1&signature=deadbeefcafe "
        "jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl "
        "key Ab3dEf5hIj7lMn9pQr1tUv3xYz5bCd7fGh9"
    )
    out = redact_text(text)
    for leaked in ("MIIEvQIBADAN", "abc.def.ghi", "xoxb-1234", "deadbeefcafe",
                   "eyJhbGciOiJSUzI1NiJ9", "Ab3dEf5hIj7lMn9pQr1tUv3xYz5bCd7fGh9"):
        assert leaked not in out, leaked
    assert "signature=" + REDACTED in out


@pytest.mark.parametrize("secret", [
    PEM, "Bearer abc.def.ghi", "xoxb-1234-5678-abcdef", "signature=deadbeefcafe",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "Ab3dEf5hIj7lMn9pQr1tUv3xYz5bCd7fGh9"])
def test_each_secret_shape_alone_is_redacted(secret: str) -> None:
    """Text is searched once for any shape before the substitutions (the fast path of text
    without a secret): a shape alone, mid-text, must not slip past that search."""
    out = redact_text(f"before {secret} after")
    assert secret not in out and REDACTED in out and out.startswith("before ")


def test_hex_digests_and_data_versions_are_kept() -> None:
    digest = "3f2a9c0d5e6b7a8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c"
    assert redact_text(f"data version {digest}") == f"data version {digest}"


def test_registered_secret_values_are_redacted_anywhere(stream: io.StringIO) -> None:
    secret = "plainsecretvalue"  # matches no pattern: only registration can catch it
    register_secret(secret)
    log = get_logger("risk_monitor.test")
    log.error("request failed", detail=f"server said: bad key {secret}", items=[secret])
    try:
        raise ValueError(f"boom {secret}")
    except ValueError:
        log.exception("with traceback")
    raw = stream.getvalue()
    assert secret not in raw
    assert REDACTED in raw


def test_redact_handles_nested_structures() -> None:
    register_secret("nested-secret-123")
    value = {"a": ["x", {"b": "nested-secret-123"}], "password": "p", "n": 1.5, "ok": True}
    assert redact(value) == {"a": ["x", {"b": REDACTED}], "password": REDACTED, "n": 1.5,
                             "ok": True}


def test_a_text_found_clean_is_redacted_once_its_secret_is_registered() -> None:
    """Clean texts are remembered (the hot path redacts the same ones on every change);
    registering a secret forgets them, so a text found clean before is redacted after."""
    text = "later-registered-value-4711"
    assert redact_text(text) is text
    assert redact_text(text) is text  # remembered
    register_secret(text)
    assert redact_text(text) == REDACTED
    assert redact_text(f"x {text}") == f"x {REDACTED}"


def test_a_level_not_logged_is_dropped_before_it_is_rendered() -> None:
    """An info line at WARNING costs a level check, not the rendering and redaction (the
    hot path logs one per alert); the level logged still renders every field."""
    rendered: list[str] = []

    class Field:
        def __str__(self) -> str:
            rendered.append("str")
            return "field"

    buf = io.StringIO()
    log = get_logger("risk_monitor.test")
    try:
        configure_logging("WARNING", stream=buf, force=True)
        log.info("alerts raised", field=Field())
        assert rendered == [] and lines(buf) == []
        log.warning("alerts raised", field=Field())
        assert rendered and lines(buf)[-1]["field"] == "field"
    finally:
        configure_logging("INFO", force=True)
