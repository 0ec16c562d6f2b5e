"""The real fireblocks SDK (35.x) against the Fireblocks simulator.

One SDK client per session (``fireblocks_client``): importing the SDK costs seconds and each call
re-parses the PEM key. The uri / bodyHash checks use raw requests with JWTs forged here, because
the SDK never sends a wrong one.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from typing import Any

import jwt
import pytest

from risk_sim.fireblocks import FireblocksSimulator
from risk_sim.jwt_keys import generate_private_key_pem, public_key_pem

pytestmark = pytest.mark.integration

EXACT = {
    "tiny": "0.000000000000000001",
    "wide": "123456789012345678.123456789012345678",
    "trailing": "1.50000000",
}


def seed_book(sim: FireblocksSimulator, vaults: int = 8) -> None:
    for i in range(vaults):
        sim.set_vault_balance(str(i), "BTC", f"{i}.{i:02d}000001", vault_name=f"Desk {i} Main")
        if i % 2 == 0:
            sim.set_vault_balance(str(i), "USDT_ERC20", Decimal(f"{i}1000.000001"),
                                  locked="10", pending="0.5", frozen="1")
    sim.set_vault_balance("3", "ETH", EXACT["wide"], available=EXACT["tiny"], staked="32")
    sim.set_vault_balance("5", "SOL", EXACT["trailing"], vault_name="Treasury Cold")


def page_through(client: Any, **query: Any) -> tuple[list[dict[str, Any]], int]:
    accounts: list[dict[str, Any]] = []
    after: str | None = None
    pages = 0
    while True:
        data = client.vaults.get_paged_vault_accounts(after=after, **query).result().data
        pages += 1
        accounts.extend(a.to_dict() for a in data.accounts)
        after = data.paging.after if data.paging else None
        if not after:
            return accounts, pages
        assert data.next_url and f"after={after}" in data.next_url
        assert pages < 50


def sign(sim: FireblocksSimulator, uri: str, body: bytes = b"", *, key: str | None = None,
         **overrides: Any) -> str:
    now = int(time.time())
    claims = {"uri": uri, "nonce": str(uuid.uuid4()), "iat": now, "exp": now + 55,
              "sub": sim.api_key, "bodyHash": hashlib.sha256(body).hexdigest()}
    claims.update(overrides)
    return jwt.encode(claims, key or sim.private_key_pem, algorithm="RS256")


def raw_request(sim: FireblocksSimulator, uri: str, token: str | None, *,
                method: str = "GET", body: bytes | None = None,
                api_key: str | None = None) -> tuple[int, Any]:
    headers = {"X-API-Key": api_key or sim.api_key, "Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(sim.url + uri, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def error_code(exc: Any) -> Any:
    """The Fireblocks error code of an SDK exception (from its JSON body)."""
    return json.loads(exc.body or "{}").get("code")


def new_client(sim: FireblocksSimulator, *, api_key: str, secret_key: str) -> Any:
    from fireblocks.client import Fireblocks
    from fireblocks.client_configuration import ClientConfiguration

    return Fireblocks(ClientConfiguration(api_key=api_key, secret_key=secret_key,
                                          base_path=sim.base_path))


# -- reads ------------------------------------------------------------------------------------
def test_paged_accounts_across_pages_equal_the_truth(fireblocks_sim: FireblocksSimulator,
                                                     fireblocks_client: Any) -> None:
    seed_book(fireblocks_sim)
    truth = fireblocks_sim.vault_accounts()
    ascending, pages = page_through(fireblocks_client, limit=3, order_by="ASC")
    assert pages == 3
    assert ascending == truth
    descending, _ = page_through(fireblocks_client, limit=5)  # Fireblocks' default is DESC
    assert descending == list(reversed(truth))


def test_paging_back_with_before(fireblocks_sim: FireblocksSimulator,
                                 fireblocks_client: Any) -> None:
    seed_book(fireblocks_sim)
    vaults = fireblocks_client.vaults
    first = vaults.get_paged_vault_accounts(limit=3, order_by="ASC").result().data
    assert first.paging.before is None and first.previous_url is None
    second = vaults.get_paged_vault_accounts(limit=3, order_by="ASC",
                                             after=first.paging.after).result().data
    assert [a.id for a in second.accounts] == ["3", "4", "5"]
    back = vaults.get_paged_vault_accounts(limit=3, order_by="ASC",
                                           before=second.paging.before).result().data
    assert [a.id for a in back.accounts] == ["0", "1", "2"]
    assert back.paging.before is None and back.paging.after == first.paging.after


def test_cursor_survives_a_vault_removed_between_pages(fireblocks_sim: FireblocksSimulator,
                                                       fireblocks_client: Any) -> None:
    seed_book(fireblocks_sim)
    vaults = fireblocks_client.vaults
    first = vaults.get_paged_vault_accounts(limit=3, order_by="ASC").result().data
    fireblocks_sim.remove_vault("2")  # the cursor's own vault
    second = vaults.get_paged_vault_accounts(limit=3, order_by="ASC",
                                             after=first.paging.after).result().data
    assert [a.id for a in second.accounts] == ["3", "4", "5"]


def test_amounts_parse_exactly_as_decimal(fireblocks_sim: FireblocksSimulator,
                                          fireblocks_client: Any) -> None:
    seed_book(fireblocks_sim)
    vault = fireblocks_client.vaults.get_vault_account("3").result().data
    eth = next(a for a in vault.assets if a.id == "ETH")
    assert Decimal(eth.total) == Decimal(EXACT["wide"])
    assert eth.total == EXACT["wide"]
    assert Decimal(eth.available) == Decimal("1E-18")
    assert eth.staked == "32"
    sol = fireblocks_client.vaults.get_vault_account_asset("5", "SOL").result().data
    assert sol.total == "1.50000000"  # trailing zeros kept, as the API sends them
    usdt = fireblocks_client.vaults.get_vault_account_asset("4", "USDT_ERC20").result().data
    assert (usdt.total, usdt.available, usdt.locked_amount, usdt.pending, usdt.frozen) == (
        "41000.000001", "40989.000001", "10", "0.5", "1")


def test_vault_assets_are_sums_across_vaults(fireblocks_sim: FireblocksSimulator,
                                             fireblocks_client: Any) -> None:
    seed_book(fireblocks_sim)
    assets = fireblocks_client.vaults.get_vault_assets().result().data
    by_id = {a.id: a for a in assets}
    assert [a.to_dict() for a in assets] == fireblocks_sim.vault_assets()
    expected_btc = sum((Decimal(f"{i}.{i:02d}000001") for i in range(8)), Decimal(0))
    assert Decimal(by_id["BTC"].total) == expected_btc
    assert Decimal(by_id["USDT_ERC20"].locked_amount) == Decimal(40)
    cold = fireblocks_client.vaults.get_vault_assets(account_name_prefix="Treasury").result().data
    assert {a.id for a in cold} == {"BTC", "SOL"}


def test_filters(fireblocks_sim: FireblocksSimulator, fireblocks_client: Any) -> None:
    seed_book(fireblocks_sim)
    vaults = fireblocks_client.vaults
    eth = vaults.get_paged_vault_accounts(asset_id="ETH").result().data.accounts
    assert [a.id for a in eth] == ["3"]
    rich = vaults.get_paged_vault_accounts(asset_id="BTC", min_amount_threshold=5,
                                           order_by="ASC").result().data.accounts
    assert [a.id for a in rich] == ["5", "6", "7"]
    named = vaults.get_paged_vault_accounts(name_prefix="Desk 1",
                                            name_suffix="Main").result().data.accounts
    assert [a.name for a in named] == ["Desk 1 Main"]


def test_not_found(fireblocks_sim: FireblocksSimulator, fireblocks_client: Any) -> None:
    from fireblocks.exceptions import NotFoundException

    seed_book(fireblocks_sim)
    with pytest.raises(NotFoundException) as info:
        fireblocks_client.vaults.get_vault_account("999").result()
    assert error_code(info.value) == 1004
    with pytest.raises(NotFoundException) as info:
        fireblocks_client.vaults.get_vault_account_asset("1", "DOGE").result()
    assert error_code(info.value) == 1006
    fireblocks_sim.remove_vault_asset("1", "BTC")
    with pytest.raises(NotFoundException):
        fireblocks_client.vaults.get_vault_account_asset("1", "BTC").result()


def test_invalid_paging_values_are_bad_requests(fireblocks_sim: FireblocksSimulator) -> None:
    uri = "/v1/vault/accounts_paged?after=not-a-cursor"
    status, body = raw_request(fireblocks_sim, uri, sign(fireblocks_sim, uri))
    assert (status, body["code"]) == (400, 1000)
    uri = "/v1/vault/accounts_paged?limit=501"
    status, body = raw_request(fireblocks_sim, uri, sign(fireblocks_sim, uri))
    assert (status, body["code"]) == (400, 1000)


# -- authentication -----------------------------------------------------------------------------
def test_wrong_api_key_is_unauthorized(fireblocks_sim: FireblocksSimulator,
                                       fireblocks_client: Any) -> None:
    from fireblocks.exceptions import UnauthorizedException

    stranger = new_client(fireblocks_sim, api_key=str(uuid.uuid4()),
                          secret_key=fireblocks_sim.private_key_pem)
    try:
        with pytest.raises(UnauthorizedException) as info:
            stranger.vaults.get_vault_assets().result()
    finally:
        stranger.close()
    assert error_code(info.value) == -7
    assert fireblocks_sim.requests[-1]["verified"] is False
    fireblocks_client.vaults.get_vault_assets().result()  # the right key still works
    assert fireblocks_sim.requests[-1]["verified"] is True


def test_key_pair_mismatch_is_invalid_signature(fireblocks_sim: FireblocksSimulator) -> None:
    from fireblocks.exceptions import UnauthorizedException

    impostor = new_client(fireblocks_sim, api_key=fireblocks_sim.api_key,
                          secret_key=generate_private_key_pem())
    try:
        with pytest.raises(UnauthorizedException) as info:
            impostor.vaults.get_paged_vault_accounts(limit=1).result()
    finally:
        impostor.close()
    assert error_code(info.value) == -1


def test_second_api_user_registered_by_public_key(fireblocks_sim: FireblocksSimulator) -> None:
    secret = generate_private_key_pem()
    fireblocks_sim.add_api_key("desk-2", public_key_pem(secret))
    fireblocks_sim.set_vault_balance("0", "BTC", "1")
    other = new_client(fireblocks_sim, api_key="desk-2", secret_key=secret)
    try:
        assert other.vaults.get_vault_account("0").result().data.assets[0].total == "1"
    finally:
        other.close()


def test_forged_uri_is_rejected(fireblocks_sim: FireblocksSimulator) -> None:
    fireblocks_sim.set_vault_balance("0", "BTC", "1")
    uri = "/v1/vault/accounts/0"
    assert raw_request(fireblocks_sim, uri, sign(fireblocks_sim, uri))[0] == 200
    for signed in ("/v1/vault/accounts/1", "/vault/accounts/0", "/v1/vault/accounts/0?x=1"):
        status, body = raw_request(fireblocks_sim, uri, sign(fireblocks_sim, signed))
        assert (status, body["code"]) == (401, -4), signed
    # query strings are part of the signed uri
    paged = "/v1/vault/accounts_paged?limit=1"
    status, body = raw_request(fireblocks_sim, paged,
                               sign(fireblocks_sim, "/v1/vault/accounts_paged?limit=500"))
    assert (status, body["code"]) == (401, -4)


def test_tampered_body_is_rejected(fireblocks_sim: FireblocksSimulator) -> None:
    uri = "/v1/vault/assets"
    signed_body = b'{"amount": "1"}'
    token = sign(fireblocks_sim, uri, signed_body)
    status, _ = raw_request(fireblocks_sim, uri, token, body=signed_body)
    assert status == 200  # the hash covers exactly the bytes sent
    status, body = raw_request(fireblocks_sim, uri, token, body=b'{"amount": "1000"}')
    assert (status, body["code"]) == (401, -7)
    status, body = raw_request(fireblocks_sim, uri, sign(fireblocks_sim, uri, b"{}"))
    assert (status, body["code"]) == (401, -7)  # GET must hash the empty body


def test_malformed_tokens(fireblocks_sim: FireblocksSimulator) -> None:
    uri = "/v1/vault/assets"
    cases = {
        -3: (None, None),
        -5: ("not.a.jwt", None),
        -6: (sign(fireblocks_sim, uri, sub="someone-else"), None),
        -10: (sign(fireblocks_sim, uri, iat=int(time.time()) - 600,
                   exp=int(time.time()) - 545), None),
        -12: (sign(fireblocks_sim, uri, iat=int(time.time()) + 600,
                   exp=int(time.time()) + 655), None),
    }
    for code, (token, api_key) in cases.items():
        status, body = raw_request(fireblocks_sim, uri, token, api_key=api_key)
        assert (status, body["code"]) == (401, code)
    no_nonce = jwt.encode({"uri": uri, "iat": int(time.time()), "exp": int(time.time()) + 55,
                           "sub": fireblocks_sim.api_key,
                           "bodyHash": hashlib.sha256(b"").hexdigest()},
                          fireblocks_sim.private_key_pem, algorithm="RS256")
    assert raw_request(fireblocks_sim, uri, no_nonce)[1]["code"] == -5
    hs256 = jwt.encode({"uri": uri}, "a-shared-hmac-secret-is-not-an-rsa-key", algorithm="HS256")
    assert raw_request(fireblocks_sim, uri, hs256)[0] == 401
    assert not any(r["verified"] for r in fireblocks_sim.requests)


def test_server_clock_skew(fireblocks_sim: FireblocksSimulator, fireblocks_client: Any) -> None:
    from fireblocks.exceptions import UnauthorizedException

    fireblocks_sim.set_clock_offset(3600)  # server ahead: the SDK's 55 s token is expired
    with pytest.raises(UnauthorizedException) as info:
        fireblocks_client.vaults.get_vault_assets().result()
    assert error_code(info.value) == -10
    fireblocks_sim.set_clock_offset(-3600)  # server behind: the token is issued in the future
    with pytest.raises(UnauthorizedException) as info:
        fireblocks_client.vaults.get_vault_assets().result()
    assert error_code(info.value) == -12
    fireblocks_sim.set_clock_offset(-2)  # within the leeway
    assert fireblocks_client.vaults.get_vault_assets().result().status_code == 200


# -- faults ----------------------------------------------------------------------------------
def test_rate_limit_raises_api_exception_429(fireblocks_sim: FireblocksSimulator,
                                             fireblocks_client: Any) -> None:
    from fireblocks.exceptions import ApiException, ServiceException

    fireblocks_sim.faults.add("rate_limit", "/v1/vault/*", count=1)  # no Retry-After
    with pytest.raises(ApiException) as info:
        fireblocks_client.vaults.get_vault_assets().result()
    assert info.value.status == 429
    assert not isinstance(info.value, ServiceException)
    assert [r["status"] for r in fireblocks_sim.requests] == [429]
    assert fireblocks_client.vaults.get_vault_assets().result().status_code == 200


def test_rate_limit_with_retry_after_is_retried_under_the_sdk(
        fireblocks_sim: FireblocksSimulator, fireblocks_client: Any) -> None:
    from fireblocks.exceptions import ApiException

    # urllib3 (inside the SDK) honours Retry-After on 429: sleeps, re-sends the same request
    fireblocks_sim.faults.add("rate_limit", "/v1/vault/assets", count=1, retry_after=1)
    started = time.monotonic()
    assert fireblocks_client.vaults.get_vault_assets().result().status_code == 200
    assert time.monotonic() - started >= 0.9
    assert [r["status"] for r in fireblocks_sim.requests] == [429, 200]
    # ... three times at most, then the SDK raises the 429
    fireblocks_sim.requests.clear()
    fireblocks_sim.faults.add("rate_limit", "/v1/vault/assets", retry_after=0)
    with pytest.raises(ApiException) as info:
        fireblocks_client.vaults.get_vault_assets().result()
    assert info.value.status == 429
    assert dict(info.value.headers or {})["Retry-After"] == "0"
    assert [r["status"] for r in fireblocks_sim.requests] == [429] * 4


def test_server_errors_raise_service_exception(fireblocks_sim: FireblocksSimulator,
                                               fireblocks_client: Any) -> None:
    from fireblocks.exceptions import ServiceException

    fireblocks_sim.faults.add("http_error", "/v1/vault/accounts_paged", count=2, status=503)
    for _ in range(2):
        with pytest.raises(ServiceException) as info:
            fireblocks_client.vaults.get_paged_vault_accounts().result()
        assert info.value.status == 503
    assert fireblocks_client.vaults.get_paged_vault_accounts().result().status_code == 200


def test_timeout_fault_times_the_client_out(fireblocks_sim: FireblocksSimulator,
                                            fireblocks_client: Any) -> None:
    import urllib3

    hang_s = 60
    fireblocks_sim.faults.add("timeout", "/v1/vault/assets", seconds=hang_s)
    started = time.monotonic()
    with pytest.raises((urllib3.exceptions.MaxRetryError, urllib3.exceptions.TimeoutError)):
        fireblocks_client.vaults.get_vault_assets(_request_timeout=0.3).result()
    assert time.monotonic() - started < hang_s  # gave up before the server answered
    # urllib3 retries read timeouts of GETs (3 times by default) with the same signed JWT
    assert 1 <= sum(r["path"] == "/v1/vault/assets" for r in fireblocks_sim.requests) <= 4


def test_latency_fault_delays_but_answers(fireblocks_sim: FireblocksSimulator,
                                          fireblocks_client: Any) -> None:
    fireblocks_sim.faults.add("latency", "/v1/vault/assets", count=1, seconds=0.3)
    started = time.monotonic()
    assert fireblocks_client.vaults.get_vault_assets().result().status_code == 200
    assert time.monotonic() - started >= 0.25


def test_malformed_body_fails_to_parse(fireblocks_sim: FireblocksSimulator,
                                       fireblocks_client: Any) -> None:
    seed_book(fireblocks_sim)
    fireblocks_sim.faults.add("malformed", "/v1/vault/assets", count=1)
    with pytest.warns(UserWarning), pytest.raises(ValueError):
        fireblocks_client.vaults.get_vault_assets().result()


@pytest.mark.parametrize(("kind", "check"), [
    ("nan", lambda d: d.is_nan()),
    ("negative", lambda d: d < 0),
    ("absurd", lambda d: d >= Decimal("12.5e12")),
])
def test_amount_faults_reach_the_client_as_strings(fireblocks_sim: FireblocksSimulator,
                                                   fireblocks_client: Any, kind: str,
                                                   check: Any) -> None:
    fireblocks_sim.set_vault_balance("0", "BTC", "12.5")
    fireblocks_sim.faults.add(kind, "/v1/vault/accounts/*", count=1)  # type: ignore[arg-type]
    vault = fireblocks_client.vaults.get_vault_account("0").result().data
    assert (vault.id, vault.name) == ("0", "Vault 0")
    btc = vault.assets[0]
    assert isinstance(btc.total, str) and check(Decimal(btc.total))
    assert btc.id == "BTC"
    clean = fireblocks_client.vaults.get_vault_account("0").result().data
    assert clean.assets[0].total == "12.5"


def test_partial_payload_drops_accounts(fireblocks_sim: FireblocksSimulator,
                                        fireblocks_client: Any) -> None:
    seed_book(fireblocks_sim)
    fireblocks_sim.faults.add("partial", "/v1/vault/accounts_paged", count=1, drop=["total"])
    data = fireblocks_client.vaults.get_paged_vault_accounts(limit=8).result().data
    assert len(data.accounts) == 4
    assert all(asset.total is None for a in data.accounts for asset in a.assets)


# -- control from another process ------------------------------------------------------------------
def test_admin_http_controls(fireblocks_sim: FireblocksSimulator, fireblocks_client: Any) -> None:
    def admin(path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        request = urllib.request.Request(
            fireblocks_sim.url + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    admin("/__admin/vaults/balance", {"vault_id": "9", "asset": "BTC", "total": "2.25",
                                      "locked": "0.25", "vault_name": "Ops"})
    asset = fireblocks_client.vaults.get_vault_account_asset("9", "BTC").result().data
    assert (asset.total, asset.available) == ("2.25", "2.00")
    assert admin("/__admin/vaults", method="GET") == fireblocks_sim.vault_accounts()
    admin("/__admin/clock", {"offset_seconds": 3600})
    assert raw_request(fireblocks_sim, "/v1/vault/assets",
                       sign(fireblocks_sim, "/v1/vault/assets"))[1]["code"] == -10
    admin("/__admin/reset", {})
    assert fireblocks_sim.vault_accounts() == []
    assert fireblocks_client.vaults.get_vault_assets().result().data == []


def test_amounts_are_validated_on_the_way_in(fireblocks_sim: FireblocksSimulator) -> None:
    with pytest.raises(TypeError):
        fireblocks_sim.set_vault_balance("0", "BTC", 1.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fireblocks_sim.set_vault_balance("0", "BTC", "one")
    fireblocks_sim.set_vault_balance("0", "BTC", Decimal("1E+3"))
    assert fireblocks_sim.vault_accounts()[0]["assets"][0]["total"] == "1000"
