"""Faults at the venues and the custodian end in the documented behaviour, never in a hang:
a transient fault is retried to success; a lasting one marks that source missing (with its
error code) while every other source still delivers, and the completeness check fails."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from prometheus_client import REGISTRY

from risk_monitor.domain.model import Collected, SourceStatus
from risk_monitor_tests.integration.collection.conftest import Sims, WriteSettings
from risk_monitor_tests.integration.collection.helpers import (
    add_fault,
    checks,
    materialize,
    metadata,
    output,
)

pytestmark = pytest.mark.integration


def collected(sims: Sims, write_settings: WriteSettings, asset: str,
              **overrides: Any) -> tuple[Collected, dg.ExecuteInProcessResult]:
    result = materialize(write_settings(sims.settings_doc(**overrides)), asset)
    assert result.success  # a missing source never fails the run
    return output(result, asset), result


def status(value: Collected, key: str) -> SourceStatus:
    (found,) = [s for s in value.sources if s.key == key]
    return found


def hits(sim: Any, path: str) -> int:
    return sum(1 for r in sim.requests if r["path"] == path)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- transient faults: retried, then complete ---------------------------------------------------
@pytest.mark.parametrize("fault", [
    {"kind": "http_error", "status": 503},
    {"kind": "http_error", "status": 500, "body": "text"},
    {"kind": "malformed"},
])
def test_a_short_burst_of_server_errors_is_retried_to_success(sims: Sims, write_settings: WriteSettings,
                                                               fault: dict[str, Any]) -> None:
    kind = fault.pop("kind")
    add_fault(sims.binance, kind, "/fapi/v3/positionRisk", count=2, **fault)
    before = counter("risk_monitor_source_retries_total", source="binance",
                     endpoint="fetch_positions")
    value, _ = collected(sims, write_settings, "exchange_positions")
    assert value.complete
    assert len(value.frame) == 5
    assert hits(sims.binance, "/fapi/v3/positionRisk") == 3
    assert counter("risk_monitor_source_retries_total", source="binance",
                   endpoint="fetch_positions") - before == 2


def test_a_429_burst_is_retried_after_retry_after(sims: Sims, write_settings: WriteSettings) -> None:
    sims.okx.faults.add("rate_limit", "/api/v5/account/balance", count=1, retry_after=0.15)
    value, _ = collected(sims, write_settings, "exchange_balances")
    assert value.complete
    times = [r["time"] for r in sims.okx.requests if r["path"] == "/api/v5/account/balance"]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.14  # waited at least Retry-After


def test_a_timeout_is_retried_to_success(sims: Sims, write_settings: WriteSettings) -> None:
    slow_s = 6.0
    sims.okx.faults.add("latency", "/api/v5/account/positions", count=1, seconds=slow_s)
    value, _ = collected(sims, write_settings, "exchange_positions",
                         venues=[dict(v, timeout_ms=600) for v in
                                 sims.settings_doc()["venues"]])
    assert value.complete
    times = [r["time"] for r in sims.okx.requests if r["path"] == "/api/v5/account/positions"]
    assert len(times) == 2
    # order, not speed: the client gave up and retried before the slow answer was due
    assert times[1] - times[0] < slow_s


# -- lasting faults: the source is missing, the others still deliver ------------------------------
def test_a_lasting_outage_marks_one_venue_missing_and_keeps_the_other(sims: Sims,
                                                                      write_settings: WriteSettings) -> None:
    sims.binance.faults.add("http_error", "/fapi/v3/positionRisk", status=502)
    before = counter("risk_monitor_errors_total", code="RM201", source="binance",
                     retryable="true")
    value, result = collected(sims, write_settings, "exchange_positions")
    binance = status(value, "exchange:binance:main")
    assert (binance.ok, binance.error_code, binance.rows) == (False, "RM201", 0)
    assert status(value, "exchange:okx:main").ok
    assert set(value.frame["venue"]) == {"okx"} and len(value.frame) == 3
    meta = metadata(result, "exchange_positions")
    assert list(meta["sources_missing"]) == ["exchange:binance:main"]
    assert meta["sources_missing"]["exchange:binance:main"].startswith("RM201")
    found = checks(result, "exchange_positions")
    assert found["positions_match_schema"].passed
    assert not found["positions_are_complete"].passed  # ERROR, not blocking: risk still runs
    assert counter("risk_monitor_errors_total", code="RM201", source="binance",
                   retryable="true") - before == 1
    assert hits(sims.binance, "/fapi/v3/positionRisk") == 3  # max_attempts, then gave up


@pytest.mark.parametrize(("venue", "route", "kind", "code"), [
    ("okx", "/api/v5/account/positions", "nan", "RM300"),
    ("okx", "/api/v5/account/positions", "negative", "RM300"),
    ("binance", "/fapi/v3/positionRisk", "partial", "RM300"),
    ("binance", "/fapi/v3/positionRisk", "skew", "RM301"),
])
def test_bad_position_payloads_make_that_venue_missing(sims: Sims, write_settings: WriteSettings, venue: str,
                                                        route: str, kind: str, code: str) -> None:
    sim = getattr(sims, venue)
    params = {"drop": ["positionSide"], "seconds": 600} if kind in ("partial", "skew") else {}
    if kind == "partial":  # drop the keys ccxt needs to tell the side
        params = {"drop": ["notional", "positionAmt"]}
    add_fault(sim, kind, route, **params)
    value, _ = collected(sims, write_settings, "exchange_positions")
    bad = status(value, f"exchange:{venue}:main")
    assert (bad.ok, bad.error_code) == (False, code), bad.error
    other = "binance" if venue == "okx" else "okx"
    assert status(value, f"exchange:{other}:main").ok
    assert set(value.frame["venue"]) == {other}


@pytest.mark.parametrize(("kind", "code"), [("negative", "RM300"), ("nan", "RM300"),
                                             ("malformed", "RM201")])
def test_bad_balance_payloads_make_that_venue_missing(sims: Sims, write_settings: WriteSettings, kind: str,
                                                       code: str) -> None:
    add_fault(sims.binance, kind, "/fapi/v3/account")
    value, _ = collected(sims, write_settings, "exchange_balances")
    bad = status(value, "exchange:binance:main")
    assert (bad.ok, bad.error_code) == (False, code), bad.error
    assert status(value, "exchange:okx:main").ok


def test_wrong_credentials_fail_fast_with_a_clear_error(sims: Sims, write_settings: WriteSettings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMTEST_BINANCE_SECRET", "x" * 64)
    monkeypatch.delenv("RMTEST_OKX_PASSWORD")
    value, _ = collected(sims, write_settings, "exchange_positions")
    binance = status(value, "exchange:binance:main")
    assert (binance.ok, binance.error_code) == (False, "RM203")
    refused = [r for r in sims.binance.requests if r["status"] in (400, 401)]
    assert len(refused) == 1  # the first signed call was refused and never retried
    okx = status(value, "exchange:okx:main")
    assert (okx.ok, okx.error_code) == (False, "RM203")
    assert "RMTEST_OKX_PASSWORD" in (okx.error or "")
    assert not [r for r in sims.okx.requests if "/account/" in r["path"]]  # checked up front
    assert "x" * 64 not in (binance.error or "")


def test_stale_quotes_are_dropped_and_the_venue_reported(sims: Sims, write_settings: WriteSettings) -> None:
    sims.okx.faults.add("stale", "/api/v5/market/tickers", seconds=3600)
    value, result = collected(sims, write_settings, "market_prices")
    okx = status(value, "market:okx:*")
    assert (okx.ok, okx.error_code, okx.rows) == (False, "RM301", 0)
    assert "BTC/USDT:USDT" in (okx.error or "")
    assert status(value, "market:binance:*").ok
    assert set(value.frame["venue"]) == {"binance"}
    found = checks(result, "market_prices")
    assert found["prices_are_fresh"].passed  # nothing stale reached the frame
    assert not found["prices_are_complete"].passed


def test_absurd_prices_are_refused_and_their_venues_fail_closed(
        sims: Sims, write_settings: WriteSettings) -> None:
    sims.okx.faults.add("absurd", "/api/v5/market/tickers", factor=1e6,
                          keys=["last", "bidPx", "askPx"])
    value, result = collected(sims, write_settings, "market_prices")
    assert "BTC/USDT:USDT" not in set(value.frame["instrument"])  # the same gate as the hot path
    okx = status(value, "market:okx:*")
    assert (okx.ok, okx.error_code) == (False, "RM300")
    found = checks(result, "market_prices")
    assert not found["prices_are_sane"].passed
    outliers = found["prices_are_sane"].metadata["outliers"].value
    assert {"okx:BTC/USDT:USDT", "binance:BTC/USDT:USDT"} <= set(outliers)  # two disagree


# -- the custodian --------------------------------------------------------------------------------
@pytest.mark.parametrize(("fault", "code"), [
    ({"kind": "auth_error"}, "RM203"),
    ({"kind": "http_error", "status": 500}, "RM201"),
    ({"kind": "nan"}, "RM300"),
    ({"kind": "negative"}, "RM300"),
    ({"kind": "malformed"}, "RM300"),
])
def test_custodian_faults_mark_it_missing(sims: Sims, write_settings: WriteSettings, fault: dict[str, Any],
                                          code: str) -> None:
    kind = fault.pop("kind")
    add_fault(sims.fireblocks, kind, "/v1/vault/accounts_paged", **fault)
    value, result = collected(sims, write_settings, "custodian_balances")
    (only,) = value.sources
    assert (only.ok, only.error_code) == (False, code), only.error
    assert value.frame.empty
    assert not checks(result, "custodian_balances")["balances_are_complete"].passed


def test_a_custodian_503_burst_is_retried(sims: Sims, write_settings: WriteSettings) -> None:
    sims.fireblocks.faults.add("http_error", "/v1/vault/accounts_paged", count=2, status=503)
    value, _ = collected(sims, write_settings, "custodian_balances")
    assert value.complete and len(value.frame) == 4


def test_a_missing_configured_vault_is_reported(sims: Sims, write_settings: WriteSettings) -> None:
    doc = sims.settings_doc()
    doc["custodians"][0]["vault_account_ids"] = ["0", "42"]
    result = materialize(write_settings(doc), "custodian_balances")
    (only,) = output(result, "custodian_balances").sources
    assert (only.ok, only.error_code) == (False, "RM302")
    assert "42" in (only.error or "")
