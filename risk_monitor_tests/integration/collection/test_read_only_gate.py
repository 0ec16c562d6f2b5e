"""Read-only by construction, at runtime: the real ccxt clients (sync and async) and the real
Fireblocks SDK client our adapters build try every kind of write through every route; the gate
refuses each before the simulator receives a byte (its request log stays empty), and a read
still works afterwards."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from risk_monitor.adapters.ccxt_client import Flavour, build_client
from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount
from risk_monitor.adapters.fireblocks_custodian import FireblocksCustodian
from risk_monitor.adapters.read_only_gate import CCXT_READ_ROUTES, FIREBLOCKS_READ_ROUTES
from risk_monitor.platform.errors import ProductionPurityError
from risk_monitor.platform.resilience import guard_for
from risk_monitor.platform.settings import CustodianSettings, Settings, VenueSettings
from risk_monitor_tests.integration.collection.conftest import Sims

pytestmark = pytest.mark.integration

#: (kind of write, ccxt implicit path, api, HTTP method) per venue, as ccxt's own methods send them
BINANCE_WRITES = [
    ("order", "order", "fapiPrivate", "POST"),
    ("cancel", "order", "fapiPrivate", "DELETE"),
    ("withdraw", "capital/withdraw/apply", "sapi", "POST"),
    ("transfer", "asset/transfer", "sapi", "POST"),
    ("leverage", "leverage", "fapiPrivate", "POST"),
    ("margin mode", "marginType", "fapiPrivate", "POST"),
]
OKX_WRITES = [
    ("order", "trade/order", "private", "POST"),
    ("cancel", "trade/cancel-order", "private", "POST"),
    ("withdraw", "asset/withdrawal", "private", "POST"),
    ("transfer", "asset/transfer", "private", "POST"),
    ("leverage", "account/set-leverage", "private", "POST"),
    ("margin mode", "account/set-position-mode", "private", "POST"),
]
WRITES = {"binance": BINANCE_WRITES, "okx": OKX_WRITES}
#: the unified method of each kind of write
UNIFIED = {
    "order": ("create_order", ("BTC/USDT:USDT", "market", "buy", 1)),
    "cancel": ("cancel_order", ("1", "BTC/USDT:USDT")),
    "withdraw": ("withdraw", ("USDT", 10, "addr")),
    "transfer": ("transfer", ("USDT", 10, "spot", "future")),
    "leverage": ("set_leverage", (3, "BTC/USDT:USDT")),
    "margin mode": ("set_margin_mode", ("isolated", "BTC/USDT:USDT")),
}
PARAMS = {"symbol": "BTCUSDT", "instId": "BTC-USDT-SWAP", "side": "BUY", "type": "MARKET",
          "quantity": "1", "sz": "1", "lever": "3", "amount": "10"}


def venue_settings(sims: Sims, venue: str) -> tuple[Settings, VenueSettings]:
    settings = Settings.model_validate(sims.settings_doc())
    (found,) = [v for v in settings.venues if v.id == venue]
    return settings, found


def refused(before: float, venue: str, method: str) -> float:
    return (REGISTRY.get_sample_value("risk_monitor_refused_requests_total",
                                      {"venue": venue, "method": method}) or 0.0) - before


def sim_of(sims: Sims, venue: str) -> Any:
    return sims.binance if venue == "binance" else sims.okx


def write_routes(client: Any, venue: str, sim_url: str) -> list[tuple[str, Callable[[], Any]]]:
    """Every route a caller holding the client has to each kind of write."""
    routes: list[tuple[str, Callable[[], Any]]] = []
    for kind, path, api, method in WRITES[venue]:
        name, args = UNIFIED[kind]
        url = sim_url + ("/fapi/v1/" + path if api == "fapiPrivate" else
                         "/sapi/v1/" + path if api == "sapi" else "/api/v5/" + path)
        implicit = getattr(type(client), f"{api}{method.capitalize()}" + "".join(
            part[:1].upper() + part[1:] for part in path.replace("-", "/").split("/")), None)
        routes += [
            (f"{kind}: unified {name}", lambda n=name, a=args: getattr(client, n)(*a)),
            (f"{kind}: request", lambda p=path, a=api, m=method:
             client.request(p, [a], m, dict(PARAMS))),
            (f"{kind}: fetch2", lambda p=path, a=api, m=method:
             client.fetch2(p, [a], m, dict(PARAMS))),
            (f"{kind}: fetch", lambda u=url, m=method:
             client.fetch(u, m, {"Content-Type": "application/json"}, '{"sz":"1"}')),
            (f"{kind}: base-class fetch", lambda u=url, m=method:
             client.__class__.__mro__[1].fetch(client, u, m, None, None)),
        ]
        if implicit is not None:  # the class-level implicit endpoint, not the instance refusal
            routes.append((f"{kind}: class implicit", lambda f=implicit: f(client, dict(PARAMS))))
    return routes


@pytest.mark.parametrize("venue", ["binance", "okx"])
def test_sync_ccxt_client_sends_no_write_by_any_route(sims: Sims, venue: str) -> None:
    settings, venue_cfg = venue_settings(sims, venue)
    account = CcxtExchangeAccount(venue_cfg, guard=guard_for(settings, venue))
    client = account.client
    sim = sim_of(sims, venue)
    sim.requests.clear()
    before = {m: refused(0.0, venue, m) for m in ("POST", "DELETE")}
    routes = write_routes(client, venue, sim.url)
    routes.append(("raw transport session.request", lambda: client.session.request(
        "POST", sim.url + "/fapi/v1/order", data=b"x")))
    for label, attempt in routes:
        with pytest.raises(ProductionPurityError):
            attempt()
        assert list(sim.requests) == [], label  # refused before a byte reached the venue
    # the unified methods fail earlier (their own refusal); every other route met the gate
    gated = [label for label, _ in routes if ": unified " not in label]
    assert sum(refused(before[m], venue, m) for m in before) == len(gated)
    # a read still works, through allowlisted endpoints only
    frame = account.fetch_positions()
    assert len(frame) > 0
    seen = {(r["method"], r["path"]) for r in sim.requests}
    assert seen and seen <= set(CCXT_READ_ROUTES[venue_cfg.exchange])
    account.close()


@pytest.mark.parametrize("flavour", ["async", "pro"])
@pytest.mark.parametrize("venue", ["binance", "okx"])
async def test_async_ccxt_client_sends_no_write_by_any_route(sims: Sims, venue: str,
                                                             flavour: Flavour) -> None:
    _, venue_cfg = venue_settings(sims, venue)
    client = build_client(venue_cfg, flavour=flavour)
    sim = sim_of(sims, venue)
    sim.requests.clear()
    try:
        for label, attempt in write_routes(client, venue, sim.url):
            with pytest.raises(ProductionPurityError):
                result = attempt()
                if inspect.isawaitable(result):
                    await result
            assert list(sim.requests) == [], label
        client.open()  # the raw aiohttp session: its connector asks the gate too
        with pytest.raises(ProductionPurityError):
            async with client.session.post(sim.url + "/api/v5/trade/order", data=b"x"):
                pass
        assert list(sim.requests) == []
        tickers = await client.fetch_tickers(["BTC/USDT:USDT"])
        assert "BTC/USDT:USDT" in tickers
        seen = {(r["method"], r["path"]) for r in sim.requests}
        assert seen and seen <= set(CCXT_READ_ROUTES[venue_cfg.exchange])
    finally:
        await client.close()


def test_fireblocks_client_sends_no_transaction_by_any_route(sims: Sims) -> None:
    from fireblocks.api.transactions_api import TransactionsApi
    from fireblocks.api.vaults_api import VaultsApi
    from fireblocks.models.create_vault_account_request import CreateVaultAccountRequest
    from fireblocks.models.transaction_request import TransactionRequest

    settings = Settings.model_validate(sims.settings_doc())
    custodian_cfg: CustodianSettings = settings.custodians[0]
    custodian = FireblocksCustodian(custodian_cfg, guard=guard_for(settings, custodian_cfg.id))
    client = custodian.client
    sim = sims.fireblocks
    sim.requests.clear()
    base = custodian_cfg.endpoint_override
    assert base is not None
    routes: list[tuple[str, Callable[[], Any]]] = [
        ("transaction: SDK API", lambda: TransactionsApi(client).create_transaction(
            transaction_request=TransactionRequest(asset_id="BTC", note="x"))),
        ("cancel: SDK API", lambda: TransactionsApi(client).cancel_transaction(tx_id="1")),
        ("vault: SDK API", lambda: VaultsApi(client).create_vault_account(
            create_vault_account_request=CreateVaultAccountRequest(name="x"))),
        ("api client call_api", lambda: client.call_api("POST", base + "/transactions", {}, {})),
        ("rest client", lambda: client.rest_client.request("POST", base + "/transactions",
                                                           {}, {"a": 1})),
        ("urllib3 pool", lambda: client.rest_client.pool_manager.request(
            "POST", base + "/transactions", body=b"{}")),
        ("read of another endpoint", lambda: client.rest_client.pool_manager.request(
            "GET", base + "/vault/assets")),
    ]
    for label, attempt in routes:
        with pytest.raises(ProductionPurityError):
            result = attempt()
            if hasattr(result, "result"):
                result.result(timeout=10)
        assert sim.requests == [], label
    frame = custodian.fetch_balances()
    assert len(frame) > 0
    assert {(r["method"], r["path"].removeprefix("/v1")) for r in sim.requests} <= \
        set(FIREBLOCKS_READ_ROUTES)
    custodian.close()
