"""The read-only gate's rule, the completeness check without sources and the sandbox message:
no server needed (the runtime proof against the simulators is in
integration/collection/test_read_only_gate.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from risk_monitor.adapters.ccxt_client import build_client
from risk_monitor.adapters.read_only_gate import ReadOnlyGate, fireblocks_gate
from risk_monitor.defs.collection_support import completeness_check
from risk_monitor.domain.model import Collected, SourceKind, SourceStatus
from risk_monitor.domain.schemas import balances_frame
from risk_monitor.platform.errors import ProductionPurityError
from risk_monitor.platform.settings import VenueSettings


def venue(**changes: object) -> VenueSettings:
    data: dict[str, object] = {"id": "binance", "exchange": "binanceusdm"}
    data.update(changes)
    return VenueSettings.model_validate(data)


def refused(venue_id: str, method: str) -> float:
    return REGISTRY.get_sample_value("risk_monitor_refused_requests_total",
                                     {"venue": venue_id, "method": method}) or 0.0


def test_the_gate_allows_the_allowlisted_reads_on_the_configured_host_only() -> None:
    client = build_client(venue(endpoint_override="http://127.0.0.1:9/pre"),
                          with_credentials=False)
    gate = client.read_only_gate
    assert gate.allows("GET", "http://127.0.0.1:9/pre/fapi/v3/positionRisk?timestamp=1&signature=x")
    assert gate.allows("get", "http://127.0.0.1:9/pre/fapi/v1/exchangeInfo")
    for method, url in [
        ("POST", "http://127.0.0.1:9/pre/fapi/v1/order"),  # a write
        ("DELETE", "http://127.0.0.1:9/pre/fapi/v3/positionRisk"),  # a read path, other verb
        ("GET", "http://127.0.0.1:9/fapi/v3/positionRisk"),  # outside the configured prefix
        ("GET", "https://fapi.binance.com/fapi/v3/positionRisk"),  # production host: not ours
        ("GET", "http://127.0.0.1:9/pre/fapi/v1/openOrders"),  # a read the adapters never make
        ("GET", "http://127.0.0.1:9/pre/fapi/v3/positionRisk/../../v1/order"),
    ]:
        assert not gate.allows(method, url), (method, url)


def test_production_hosts_are_the_venues_own() -> None:
    gate = build_client(venue(), with_credentials=False).read_only_gate
    assert gate.allows("GET", "https://fapi.binance.com/fapi/v1/ticker/24hr")
    assert not gate.allows("GET", "https://evil.example/fapi/v1/ticker/24hr")
    okx = build_client(venue(id="okx", exchange="okx"), with_credentials=False).read_only_gate
    assert okx.allows("GET", "https://www.okx.com/api/v5/account/positions")
    assert not okx.allows("POST", "https://www.okx.com/api/v5/trade/order")


def test_a_refusal_is_typed_logged_and_counted_before_sending() -> None:
    gate = ReadOnlyGate(venue="unit-venue", routes=frozenset({("GET", "/a")}),
                        hosts=frozenset({"h:1"}))
    before = refused("unit-venue", "POST")
    with pytest.raises(ProductionPurityError) as caught:
        gate.check("POST", "http://h:1/a?signature=secret")
    assert refused("unit-venue", "POST") - before == 1
    assert "POST /a" in caught.value.message
    assert "signature" not in caught.value.message  # the query (a signature) is never echoed
    gate.check("GET", "http://h:1/a")  # allowed: returns


def test_a_venue_without_an_allowlist_gets_nothing_through() -> None:
    gate = build_client(venue(id="kraken", exchange="kraken"),
                        with_credentials=False).read_only_gate
    assert not gate.routes
    with pytest.raises(ProductionPurityError):
        gate.check("GET", "https://api.kraken.com/0/public/Ticker")


def test_the_fireblocks_gate_allows_the_vault_listing_only() -> None:
    gate = fireblocks_gate("fireblocks", "https://api.fireblocks.io/v1")
    assert gate.allows("GET", "https://api.fireblocks.io/v1/vault/accounts_paged?limit=2")
    assert not gate.allows("POST", "https://api.fireblocks.io/v1/transactions")
    assert not gate.allows("GET", "https://api.fireblocks.io/v1/vault/accounts/0")
    assert not gate.allows("GET", "https://other.example/v1/vault/accounts_paged")


# --- #16 item 3: no custodian configured -------------------------------------------------
def test_completeness_with_nothing_configured_passes() -> None:
    empty = Collected(frame=balances_frame([]), sources=())
    result = completeness_check("balances_are_complete", "custodian_balances", empty, [])
    assert result.passed
    assert result.metadata["missing"] == dg.MetadataValue.json({})


def test_completeness_still_fails_for_a_missing_configured_source() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    failed = SourceStatus(kind=SourceKind.CUSTODIAN, venue="fireblocks", account="*", ok=False,
                          as_of=at, rows=0, error_code="RM201", error="down")
    result = completeness_check("balances_are_complete", "custodian_balances",
                                Collected(frame=balances_frame([]), sources=(failed,)),
                                ["custodian:fireblocks:*"])
    assert not result.passed
    empty = Collected(frame=balances_frame([]), sources=())
    assert not completeness_check("c", "custodian_balances", empty,
                                  ["custodian:fireblocks:*"]).passed


# --- #16 item 4: the sandbox refusal names the option ------------------------------------
@pytest.mark.parametrize("option", ["sandboxMode", "testnet"])
def test_the_sandbox_refusal_names_the_option(option: str) -> None:
    with pytest.raises(ValidationError) as caught:
        venue(options={option: True})
    text = str(caught.value)
    assert f"option '{option}' selects a sandbox/test mode" in text
    assert "{option" not in text
