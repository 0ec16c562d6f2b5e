"""Read-only, production-only: no adapter can trade, transfer or enter a sandbox."""

from __future__ import annotations

import inspect

import ccxt
import pytest

from risk_monitor.adapters.ccxt_client import build_client, rewrite_urls, write_method_names
from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount
from risk_monitor.adapters.fireblocks_custodian import FireblocksCustodian
from risk_monitor.platform.errors import ProductionPurityError
from risk_monitor.platform.settings import VenueSettings

ALLOWED_PUBLIC = {"fetch_positions", "fetch_balances", "fetch_tickers", "fetch_vault_accounts",
                  "check_credentials", "close", "from_settings", "endpoint_override", "client"}
WRITE_WORDS = ("create", "order", "cancel", "edit", "withdraw", "transfer", "borrow", "repay",
               "leverage", "margin", "sandbox", "trade", "send", "post", "put", "delete")


def venue(**changes: object) -> VenueSettings:
    data: dict[str, object] = {"id": "binance", "exchange": "binanceusdm"}
    data.update(changes)
    return VenueSettings.model_validate(data)


@pytest.mark.parametrize("cls", [CcxtExchangeAccount, FireblocksCustodian])
def test_adapters_expose_reads_only(cls: type) -> None:
    public = {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}
    assert public <= ALLOWED_PUBLIC, public - ALLOWED_PUBLIC
    for name in public:
        if name.startswith("fetch_"):
            continue
        assert not any(word in name for word in WRITE_WORDS), name


@pytest.mark.parametrize("exchange", ["binanceusdm", "okx", "kraken"])
def test_every_ccxt_write_method_is_refused_on_the_client(exchange: str) -> None:
    client = build_client(venue(exchange=exchange), with_credentials=False)
    unified = ["create_order", "createOrder", "create_market_buy_order", "cancel_order",
               "cancelAllOrders", "edit_order", "withdraw", "transfer", "borrow_cross_margin",
               "repay_isolated_margin", "set_leverage", "setMarginMode", "set_position_mode",
               "add_margin", "close_position", "close_all_positions", "create_orders_ws"]
    for name in unified:
        with pytest.raises(ProductionPurityError, match="disabled"):
            getattr(client, name)("BTC/USDT:USDT", "market", "buy", 1)
    # reads are untouched
    assert inspect.ismethod(client.fetch_positions)
    assert inspect.ismethod(client.fetch_balance)
    assert inspect.ismethod(client.load_markets)


def test_implicit_write_endpoints_are_refused_too() -> None:
    client = build_client(venue(), with_credentials=False)
    for name in ("fapiPrivatePostOrder", "fapiprivate_post_order", "fapiPrivateDeleteOrder",
                 "fapiPrivatePostLeverage", "fapiPrivatePostMarginType", "sapiPostAssetTransfer",
                 "sapiPostCapitalWithdrawApply"):
        with pytest.raises(ProductionPurityError):
            getattr(client, name)({})
    names = write_method_names(type(client))
    assert "fapiPrivateGetPositionRisk" not in names
    assert "fapiPrivateV3GetAccount" not in names
    assert "fapiPublicGetTicker24hr" not in names
    okx = write_method_names(ccxt.okx)
    assert {"privatePostTradeOrder", "privatePostAssetWithdrawal",
            "privatePostAccountSetLeverage"} <= okx
    assert "privateGetAccountPositions" not in okx
    kraken = write_method_names(ccxt.kraken)  # Kraken POSTs its reads
    assert "privatePostAddOrder" in kraken
    assert not {"privatePostBalance", "privatePostOpenPositions"} & kraken


def test_sandbox_mode_is_refused() -> None:
    client = build_client(venue(), with_credentials=False)
    with pytest.raises(ProductionPurityError):
        client.set_sandbox_mode(True)
    with pytest.raises(ProductionPurityError):
        client.setSandboxMode(True)
    assert not client.isSandboxModeEnabled


@pytest.mark.parametrize("option", ["sandboxMode", "testnet", "useTestnet", "demoTrading"])
def test_sandbox_like_options_are_refused(option: str) -> None:
    # the settings validator refuses them too; the adapter does not trust its caller
    settings = VenueSettings.model_construct(
        id="binance", exchange="binanceusdm", account="main", api_key_env=None,
        secret_env=None, password_env=None, endpoint_override=None,
        ws_endpoint_override=None, symbols=[], options={option: True},
        enable_rate_limit=True, timeout_ms=1000)
    with pytest.raises(ProductionPurityError, match="sandbox"):
        build_client(settings, with_credentials=False)


def test_production_urls_stay_unless_an_override_is_configured() -> None:
    client = build_client(venue(), with_credentials=False)
    assert client.urls["api"]["fapiPublic"].startswith("https://fapi.binance.com/")


def test_endpoint_override_rebases_every_binance_url_keeping_paths() -> None:
    original = ccxt.binanceusdm().urls["api"]
    client = build_client(venue(endpoint_override="http://127.0.0.1:9999"),
                          with_credentials=False)
    api = client.urls["api"]
    for key, url in original.items():
        if key == "ws" or not isinstance(url, str):
            continue
        assert api[key].startswith("http://127.0.0.1:9999/"), key
        assert api[key].split("9999", 1)[1] == "/" + url.split("/", 3)[3], key


def test_endpoint_override_replaces_the_okx_template() -> None:
    client = build_client(venue(id="okx", exchange="okx", endpoint_override="http://h:1/prefix"),
                          with_credentials=False)
    assert client.urls["api"]["rest"] == "http://h:1/prefix"
    assert rewrite_urls({"a": {"b": "wss://x.com:443/ws/v5"}}, "ws://127.0.0.1:5") == \
        {"a": {"b": "ws://127.0.0.1:5/ws/v5"}}


def test_a_websocket_client_needs_both_overrides_or_none() -> None:
    with pytest.raises(ProductionPurityError, match="set together"):
        build_client(venue(endpoint_override="http://127.0.0.1:1"), flavour="pro",
                     with_credentials=False)
    client = build_client(venue(endpoint_override="http://127.0.0.1:1",
                                ws_endpoint_override="ws://127.0.0.1:1"), flavour="pro",
                          with_credentials=False)
    assert client.urls["api"]["ws"]["linear"] == "ws://127.0.0.1:1/ws"
    with pytest.raises(ProductionPurityError):
        client.create_order("BTC/USDT:USDT", "market", "buy", 1)
    with pytest.raises(ProductionPurityError):
        client.create_order_ws("BTC/USDT:USDT", "market", "buy", 1)
