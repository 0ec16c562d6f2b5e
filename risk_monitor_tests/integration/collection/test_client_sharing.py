"""Shared ccxt clients and the on-disk markets cache that keep a Dagster run fast: one client
per account and process, ``load_markets`` skipped when a fresh, complete cache is on disk, and
the venue asked again whenever the cache is old, incomplete or out of date (BadSymbol)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from risk_monitor.adapters import ccxt_exchange
from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount, MarketsCache
from risk_monitor.platform.settings import Settings, VenueSettings, load_settings
from risk_monitor_tests.integration.collection.conftest import Sims, WriteSettings

pytestmark = pytest.mark.integration

MARKET_ROUTES = {"binance": "/fapi/v1/exchangeInfo", "okx": "/api/v5/public/instruments"}


def settings_for(sims: Sims, write_settings: WriteSettings, tmp_path: Path) -> Settings:
    return load_settings(write_settings(sims.settings_doc(data_dir=str(tmp_path / "data"))))


def venue(settings: Settings, venue_id: str) -> VenueSettings:
    (found,) = [v for v in settings.venues if v.id == venue_id]
    return found


def market_loads(sim: Any, venue_id: str) -> int:
    return sum(1 for r in sim.requests if r["path"] == MARKET_ROUTES[venue_id])


def close_shared_clients() -> None:
    """Forget every shared client, as a new Dagster run's process starts without them."""
    with ccxt_exchange._shared_lock:
        clients = list(ccxt_exchange._shared.values())
        ccxt_exchange._shared.clear()
    for client in clients:
        if getattr(client, "session", None) is not None:
            client.session.close()


@pytest.fixture(autouse=True)
def fresh_process() -> Any:
    """Each test starts like a new Dagster run: no client in memory."""
    close_shared_clients()
    yield
    close_shared_clients()


def test_accounts_of_one_venue_share_a_client_and_credentials_separate_them(
        sims: Sims, write_settings: WriteSettings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(sims, write_settings, tmp_path)
    binance = venue(settings, "binance")
    first = CcxtExchangeAccount.from_settings(settings, binance, shared=True)
    second = CcxtExchangeAccount.from_settings(settings, binance, shared=True)
    assert first.client is second.client
    assert CcxtExchangeAccount.from_settings(settings, binance).client is not first.client
    public = CcxtExchangeAccount.from_settings(settings, binance, with_credentials=False,
                                              shared=True)
    assert public.client is not first.client
    monkeypatch.setenv("RMTEST_BINANCE_SECRET", "another-secret")
    rotated = CcxtExchangeAccount.from_settings(settings, binance, shared=True)
    assert rotated.client is not first.client  # a rotated secret never reuses the old client
    first.close()  # closing a shared account leaves the process's client usable
    assert len(second.fetch_positions()) == 2


@pytest.mark.parametrize("venue_id", ["binance", "okx"])
def test_a_new_process_reads_markets_from_disk_and_gets_the_same_frames(
        sims: Sims, write_settings: WriteSettings, tmp_path: Path, venue_id: str) -> None:
    settings = settings_for(sims, write_settings, tmp_path)
    sim = getattr(sims, venue_id)
    cold = CcxtExchangeAccount.from_settings(settings, venue(settings, venue_id), shared=True)
    positions, balances = cold.fetch_positions(), cold.fetch_balances()
    assert market_loads(sim, venue_id) >= 1
    loads = market_loads(sim, venue_id)
    cached = list((tmp_path / "data" / "ccxt-markets").glob(f"{cold.exchange_id}-*.json"))
    assert len(cached) == 1

    close_shared_clients()  # a new run: nothing in memory, the cache on disk
    warm = CcxtExchangeAccount.from_settings(settings, venue(settings, venue_id), shared=True)
    again_positions, again_balances = warm.fetch_positions(), warm.fetch_balances()
    assert market_loads(sim, venue_id) == loads  # no load_markets at all
    volatile = ["received_at", "timestamp"]
    pd.testing.assert_frame_equal(positions.drop(columns=volatile),
                                  again_positions.drop(columns=volatile))
    pd.testing.assert_frame_equal(balances.drop(columns=volatile),
                                  again_balances.drop(columns=volatile))


def test_an_incomplete_cache_is_ignored_and_rewritten(sims: Sims, write_settings: WriteSettings,
                                                      tmp_path: Path) -> None:
    settings = settings_for(sims, write_settings, tmp_path)
    binance = venue(settings, "binance")
    CcxtExchangeAccount.from_settings(settings, binance, shared=True).fetch_positions()
    cache = MarketsCache.for_settings(settings)
    path = cache.path(binance, private=True)
    document = json.loads(path.read_text())
    document["markets"] = [m for m in document["markets"] if m["symbol"] != "BTC/USDT:USDT"]
    path.write_text(json.dumps(document))

    close_shared_clients()
    loads = market_loads(sims.binance, "binance")
    frame = CcxtExchangeAccount.from_settings(settings, binance, shared=True).fetch_positions()
    assert market_loads(sims.binance, "binance") == loads + 1  # a configured symbol was missing
    assert "BTC/USDT:USDT" in set(frame["instrument"])
    symbols = {m["symbol"] for m in json.loads(path.read_text())["markets"]}
    assert "BTC/USDT:USDT" in symbols


def test_a_symbol_the_cache_does_not_know_reloads_the_markets(
        sims: Sims, write_settings: WriteSettings, tmp_path: Path) -> None:
    settings = settings_for(sims, write_settings, tmp_path)
    okx = venue(settings, "okx")
    public = CcxtExchangeAccount.from_settings(settings, okx, with_credentials=False, shared=True)
    public.fetch_tickers(["BTC/USDT:USDT"])
    path = MarketsCache.for_settings(settings).path(okx, private=False)
    document = json.loads(path.read_text())
    document["markets"] = [m for m in document["markets"] if m["symbol"] != "SOL/USDT:USDT"]
    path.write_text(json.dumps(document))  # SOL is listed but not configured: not checked

    close_shared_clients()
    loads = market_loads(sims.okx, "okx")
    first = CcxtExchangeAccount.from_settings(settings, okx, with_credentials=False, shared=True)
    first.fetch_tickers(["BTC/USDT:USDT"])  # markets from the cache, into the shared client
    assert market_loads(sims.okx, "okx") == loads
    public = CcxtExchangeAccount.from_settings(settings, okx, with_credentials=False, shared=True)
    frame = public.fetch_tickers(["SOL/USDT:USDT"])  # ccxt: BadSymbol on the cached markets
    assert list(frame["instrument"]) == ["SOL/USDT:USDT"]
    assert market_loads(sims.okx, "okx") > loads
    symbols = {m["symbol"] for m in json.loads(path.read_text())["markets"]}
    assert "SOL/USDT:USDT" in symbols


def test_an_old_or_unreadable_cache_reads_as_absent(tmp_path: Path) -> None:
    now = [1_000_000.0]
    cache = MarketsCache(tmp_path, ttl_s=60, clock=lambda: now[0])
    binance = VenueSettings(id="binance", exchange="binanceusdm",
                            endpoint_override="http://127.0.0.1:9")

    class Client:
        markets = {"BTC/USDT:USDT": {"symbol": "BTC/USDT:USDT", "id": "BTCUSDT"}}
        currencies = {"USDT": {"code": "USDT"}}

    cache.store(binance, Client(), private=True)
    path = cache.path(binance, private=True)
    os.utime(path, (now[0], now[0]))  # written "now" on the fake clock
    assert cache.load(binance, private=True) == (list(Client.markets.values()),
                                                 Client.currencies)
    assert cache.load(binance, private=False) is None  # public and private lists are apart
    now[0] += 61
    assert cache.load(binance, private=True) is None
    now[0] -= 61
    path.write_text("{not json")
    assert cache.load(binance, private=True) is None
    cache.invalidate(binance, private=True)
    assert not path.exists()
