"""State that must outlive a Dagster run (a new process each): breakers in Redis, the quote
cache; and the read-only guarantee against a simulator that *would* accept an order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis

from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount
from risk_monitor.adapters.fireblocks_custodian import FireblocksCustodian
from risk_monitor.adapters.redis_quotes import encode_quote, quotes_key
from risk_monitor.platform.errors import ProductionPurityError
from risk_monitor.platform.resilience import guard_for
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.guards import clear_guards
from risk_monitor_tests.integration.collection.conftest import Sims, WriteSettings
from risk_monitor_tests.integration.collection.helpers import materialize, output

pytestmark = pytest.mark.integration


def test_an_open_breaker_is_shared_through_redis_across_processes(
        sims: Sims, write_settings: WriteSettings, redis_url: str, redis_prefix: str) -> None:
    doc = sims.settings_doc(redis_url=redis_url,
                            market_data={"key_prefix": redis_prefix, "source": "rest"},
                            resilience={"breaker_fail_max": 1, "breaker_reset_s": 30,
                                        "max_attempts": 2})
    config = write_settings(doc)
    sims.binance.faults.add("http_error", "/fapi/v3/positionRisk", status=503)
    first = output(materialize(config, "exchange_positions"), "exchange_positions")
    assert {s.venue: s.error_code for s in first.missing} == {"binance": "RM201"}
    assert guard_for(load_settings(config), "binance").shared
    clear_guards()  # what a new Dagster run process starts with: nothing in memory
    sims.binance.requests.clear()
    second = output(materialize(config, "exchange_positions"), "exchange_positions")
    assert {s.venue: s.error_code for s in second.missing} == {"binance": "RM206"}
    assert not [r for r in sims.binance.requests if "positionRisk" in r["path"]]
    assert [s.venue for s in second.sources if s.ok] == ["okx"]
    keys = redis.Redis.from_url(redis_url).keys(f"{redis_prefix}:breaker:binance*")
    assert keys  # the state lives in Redis, under the configured prefix


def test_market_prices_from_a_stale_cache_are_reported_not_used(
        sims: Sims, write_settings: WriteSettings, redis_url: str, redis_prefix: str) -> None:
    config = write_settings(sims.settings_doc(
        redis_url=redis_url, market_data={"key_prefix": redis_prefix, "source": "auto"}))
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    for venue, age in (("binance", 1), ("okx", 3600)):
        for symbol in ("BTC/USDT:USDT", "ETH/USDT:USDT"):
            row = {"base": symbol[:3], "quote": "USDT", "bid": None, "ask": None,
                   "last": 100.0, "mark": 100.0, "timestamp": now - timedelta(seconds=age),
                   "received_at": now - timedelta(seconds=age)}
            client.hset(quotes_key(redis_prefix, venue), symbol,
                        json.dumps(encode_quote(row, "stream")))
    prices = output(materialize(config, "market_prices"), "market_prices")
    status = {s.venue: s for s in prices.sources}
    assert status["binance"].ok
    assert (status["okx"].ok, status["okx"].error_code) == (False, "RM301")
    assert set(prices.frame["venue"]) == {"binance"}
    assert not sims.binance.requests  # auto + redis_url: no venue call at all


def test_the_exchange_client_cannot_place_an_order_even_against_a_willing_venue(
        sims: Sims, write_settings: WriteSettings) -> None:
    settings = load_settings(write_settings(sims.settings_doc()))
    for venue in settings.venues:
        account = CcxtExchangeAccount.from_settings(settings, venue)
        assert len(account.fetch_positions())  # credentials and endpoint are fine
        client = account.client
        raw_order = "fapiPrivatePostOrder" if venue.id == "binance" else "privatePostTradeOrder"
        calls = [("create_order", ("BTC/USDT:USDT", "market", "buy", 1)),
                 ("create_market_buy_order", ("BTC/USDT:USDT", 1)),
                 ("set_leverage", (50, "BTC/USDT:USDT")),
                 ("cancel_all_orders", ("BTC/USDT:USDT",)),
                 (raw_order, ({"symbol": "BTCUSDT"},))]
        for name, args in calls:
            with pytest.raises(ProductionPurityError):
                getattr(client, name)(*args)
    for sim in (sims.binance, sims.okx):
        assert not [r for r in sim.requests if r["method"] != "GET"]
    state = sims.market.state()["accounts"]
    assert state["binance"]["main"]["orders"] == 0 and state["okx"]["main"]["orders"] == 0


def test_the_custodian_client_refuses_anything_but_reads(sims: Sims, write_settings: WriteSettings) -> None:
    settings = load_settings(write_settings(sims.settings_doc()))
    custodian = FireblocksCustodian(settings.custodians[0],
                                    guard=guard_for(settings, "fireblocks"))
    assert len(custodian.fetch_balances()) == 4
    assert custodian._client is not None
    with pytest.raises(ProductionPurityError):
        custodian._client.call_api("POST", f"{sims.fireblocks.base_path}/transactions",
                                   body={"amount": "1"})
    assert not [r for r in sims.fireblocks.requests if r.get("method") != "GET"]
    custodian.close()
