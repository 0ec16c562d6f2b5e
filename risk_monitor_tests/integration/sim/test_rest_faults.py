"""REST fault injection as the real ccxt client experiences it (ccxt 4.5.90).

Some of these document ccxt pitfalls the production adapter must guard against: a malformed
positions body comes back as an empty list (not an error), NaN prices parse to None on Binance
and raise a bare ValueError on OKX.
"""

from __future__ import annotations

import time
from typing import Any

import ccxt
import pytest

from risk_monitor_tests.fixtures.sims import ccxt_client
from risk_sim.launcher import SimulatorStack

from .helpers import f

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"
TICKER_ROUTE = {"binance": "/fapi/v1/ticker/24hr", "okx": "/api/v5/market/ticker"}
POSITIONS_ROUTE = {"binance": "/fapi/v3/positionRisk", "okx": "/api/v5/account/positions"}


@pytest.fixture(params=["binance", "okx"])
def venue(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(sim: SimulatorStack, venue: str) -> Any:
    exchange = ccxt_client(sim, venue, "sync")
    exchange.load_markets()
    return exchange


def test_latency_delays_the_answer(sim: SimulatorStack, venue: str, client: Any) -> None:
    sim.venue(venue).faults.add("latency", TICKER_ROUTE[venue], count=1, seconds=0.5)
    started = time.monotonic()
    ticker = client.fetch_ticker(BTC)
    assert time.monotonic() - started >= 0.45
    assert ticker["last"] == f(sim.market.quote(venue, BTC).last)
    faults = sim.venue(venue).faults
    fired = len(faults.fired)
    client.fetch_ticker(BTC)  # count=1: the next call is not delayed (no fault fires)
    assert faults.snapshot() == []
    assert len(faults.fired) == fired


def test_a_hanging_server_is_a_request_timeout(sim: SimulatorStack, venue: str,
                                               client: Any) -> None:
    sim.venue(venue).faults.add("timeout", TICKER_ROUTE[venue], count=1, seconds=3)
    client.timeout = 500
    with pytest.raises(ccxt.RequestTimeout):
        client.fetch_ticker(BTC)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_network_errors(sim: SimulatorStack, venue: str, client: Any,
                                          status: int) -> None:
    sim.venue(venue).faults.add("http_error", "*", count=1, status=status)
    with pytest.raises(ccxt.OperationFailed) as raised:  # NetworkError's parent in ccxt 4.5
        client.fetch_ticker(BTC)
    expected = ccxt.OperationFailed if venue == "binance" else ccxt.ExchangeNotAvailable
    assert isinstance(raised.value, expected)  # binance -1001 / okx 50026
    sim.venue(venue).faults.add("http_error", "*", count=1, status=status, body="text")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        client.fetch_ticker(BTC)
    assert client.fetch_ticker(BTC)["last"] > 0


def test_injected_rate_limit_and_auth_errors(sim: SimulatorStack, venue: str,
                                             client: Any) -> None:
    faults = sim.venue(venue).faults
    faults.add("rate_limit", "*", count=1, retry_after=2)
    with pytest.raises(ccxt.DDoSProtection if venue == "binance" else ccxt.RateLimitExceeded):
        client.fetch_ticker(BTC)
    faults.add("auth_error", POSITIONS_ROUTE[venue], count=1)
    with pytest.raises(ccxt.AuthenticationError):
        client.fetch_positions()


def test_malformed_json(sim: SimulatorStack, venue: str, client: Any) -> None:
    faults = sim.venue(venue).faults
    faults.add("malformed", TICKER_ROUTE[venue], count=1)
    ticker = client.fetch_ticker(BTC)
    assert ticker["last"] is None  # ccxt does not raise: the body is simply not parsed
    assert client.fetch_positions()  # the account has positions ...
    faults.add("malformed", POSITIONS_ROUTE[venue], count=1)
    assert client.fetch_positions() == []  # ... a cut body reads as "no positions"


def test_nan_negative_partial_values(sim: SimulatorStack, venue: str, client: Any) -> None:
    faults = sim.venue(venue).faults
    faults.add("nan", TICKER_ROUTE[venue], count=1)
    # NaN prices surface as a bare ValueError from ccxt's number parsing, not a ccxt error:
    # the collection adapter must map it (it does, to DataValidationError)
    with pytest.raises(ValueError, match="nan"):
        client.fetch_ticker(BTC)
    faults.add("negative", TICKER_ROUTE[venue], count=1)
    assert client.fetch_ticker(BTC)["last"] == -f(sim.market.quote(venue, BTC).last)
    faults.add("partial", "/fapi/v1/ticker/24hr" if venue == "binance"
               else "/api/v5/market/tickers", count=1)
    symbols = sorted(sim.market.instruments[venue])
    tickers = client.fetch_tickers(symbols)
    assert 0 < len(tickers) < len(symbols)


def test_stale_timestamps(sim: SimulatorStack, venue: str, client: Any) -> None:
    faults = sim.venue(venue).faults
    route = "/fapi/v1/premiumIndex" if venue == "binance" else "/api/v5/market/ticker"
    faults.add("stale", route, count=1, seconds=3600)
    data = client.fetch_mark_price(BTC) if venue == "binance" else client.fetch_ticker(BTC)
    assert time.time() * 1000 - data["timestamp"] == pytest.approx(3600_000, abs=30_000)


def test_faults_over_http_admin(sim: SimulatorStack, venue: str, client: Any) -> None:
    import json
    import urllib.request

    server = sim.venue(venue)
    body = json.dumps({"kind": "http_error", "route": TICKER_ROUTE[venue], "count": 1,
                       "params": {"status": 502}}).encode()
    request = urllib.request.Request(f"{server.url}/__admin/faults", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.loads(answer.read())["kind"] == "http_error"
    with pytest.raises(ccxt.OperationFailed):
        client.fetch_ticker(BTC)
    assert server.faults.snapshot() == []  # consumed
