"""A Fireblocks API v1 simulator on loopback, for the real ``fireblocks`` SDK (35.x).

It serves the read-only vault endpoints Risk Monitor uses and authenticates every request the
way Fireblocks does: ``X-API-Key`` plus ``Authorization: Bearer <JWT>`` signed RS256 with the
API user's private key, claims ``uri`` (path with ``/v1`` and query string, exactly as sent),
``nonce``, ``iat``, ``exp``, ``sub`` (the API key) and ``bodyHash`` (sha256 hex of the body).
Failures answer 401 with Fireblocks' own error codes (-1 invalid signature, -2 missing API key,
-3 missing JWT, -4 wrong URL, -5 bad token format, -6 wrong user, -7 token not accepted, -10
expired, -12 issued in the future), so the SDK raises ``UnauthorizedException``.

Amounts are JSON strings, as Fireblocks sends them and as the SDK's strict models require; they
are stored exactly as given so tests can check exact Decimal parsing. Faults (5xx, 429, latency,
timeouts, malformed or partial bodies, NaN / negative / absurd amounts) come from the shared
:class:`FaultInjector`; server clock skew from :meth:`FireblocksSimulator.set_clock_offset`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web

from risk_sim.faults import Fault, FaultInjector
from risk_sim.jwt_keys import generate_private_key_pem, load_public_key, public_key_pem
from risk_sim.server import BackgroundServer

AMOUNT_FIELDS = ("total", "balance", "available", "pending", "frozen", "lockedAmount", "staked")
DEFAULT_PAGE_LIMIT = 200
MAX_PAGE_LIMIT = 500
REQUIRED_CLAIMS = ("uri", "nonce", "iat", "exp", "sub", "bodyHash")

Amount = str | Decimal | int


class FireblocksApiError(Exception):
    """An error answered as Fireblocks does: ``{"message": ..., "code": ...}``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return web.json_response({"message": self.message, "code": self.code},
                                 status=self.status)


def _auth_error(code: int, message: str) -> FireblocksApiError:
    return FireblocksApiError(401, code, message)


def _fireblocks_error_body(fault: Fault, _: web.Request) -> web.Response:
    """Injected failures rendered as Fireblocks renders them."""
    if fault.kind == "rate_limit":
        # Retry-After only when asked for: urllib3 (under the SDK) honours it on 429 and 503 by
        # sleeping and retrying up to 3 times before the SDK sees anything.
        retry_after = fault.params.get("retry_after")
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
        return web.json_response({"message": "Too many requests", "code": 429}, status=429,
                                 headers=headers)
    if fault.kind == "auth_error":
        return _auth_error(-7, "Unauthorized: Token was not accepted.").response()
    status = int(fault.params.get("status", 500))
    return web.json_response({"message": "Internal server error", "code": status},
                             status=status)


def _amount(value: Amount, field: str) -> str:
    """Normalise an amount to the string the API sends; refuse floats (they lose digits)."""
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise TypeError(f"{field} must be str, Decimal or int, not {type(value).__name__}")
    if isinstance(value, str):
        try:
            Decimal(value)
        except InvalidOperation as exc:
            raise ValueError(f"{field}={value!r} is not a number") from exc
        return value
    return format(Decimal(value), "f")


def _fmt(value: Decimal) -> str:
    return format(value, "f")


def _sort_key(vault_id: str) -> tuple[int, int, str]:
    return (0, int(vault_id), "") if vault_id.isdigit() else (1, 0, vault_id)


def _encode_cursor(vault_id: str) -> str:
    raw = json.dumps({"id": vault_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)["id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FireblocksApiError(400, 1000, "GetVaultAccounts request has invalid values: "
                                            "bad paging cursor") from exc
    if not isinstance(value, str):
        raise FireblocksApiError(400, 1000, "GetVaultAccounts request has invalid values: "
                                            "bad paging cursor")
    return value


class FireblocksSimulator:
    """Fireblocks API on ``http://127.0.0.1:<port>/v1``; give the SDK ``base_path``."""

    def __init__(self, *, seed: int = 0, api_key: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, clock_leeway_seconds: float = 5.0) -> None:
        rng = random.Random(seed)
        self.api_key = api_key or str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.private_key_pem = generate_private_key_pem()
        self.clock_leeway_seconds = clock_leeway_seconds
        self.faults = FaultInjector(seed)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._vaults: dict[str, dict[str, Any]] = {}
        self._clock_offset = 0.0
        self._public_keys: dict[str, Any] = {
            self.api_key: load_public_key(public_key_pem(self.private_key_pem))}
        self._server = BackgroundServer(self._build_app(), host=host, port=port,
                                        name="fireblocks")

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    @property
    def base_path(self) -> str:
        return f"{self._server.url}/v1"

    def start(self) -> FireblocksSimulator:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FireblocksSimulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- state the tests and scenarios drive ----------------------------------------------------
    def add_vault(self, vault_id: str, name: str | None = None, *, hidden_on_ui: bool = False,
                  customer_ref_id: str | None = None) -> None:
        """Create (or rename) a vault account without assets."""
        with self._lock:
            vault = self._vault(vault_id)
            if name is not None:
                vault["name"] = name
            vault["hiddenOnUI"] = hidden_on_ui
            if customer_ref_id is not None:
                vault["customerRefId"] = customer_ref_id

    def set_vault_balance(self, vault_id: str, asset: str, total: Amount, *,
                          available: Amount | None = None, pending: Amount = "0",
                          frozen: Amount = "0", locked: Amount = "0", staked: Amount = "0",
                          vault_name: str | None = None) -> None:
        """Set one asset wallet of a vault (created if needed); available defaults to
        total - frozen - locked, as Fireblocks computes it."""
        balances = {"total": _amount(total, "total"), "pending": _amount(pending, "pending"),
                    "frozen": _amount(frozen, "frozen"), "lockedAmount": _amount(locked, "locked"),
                    "staked": _amount(staked, "staked")}
        if available is None:
            free = (Decimal(balances["total"]) - Decimal(balances["frozen"])
                    - Decimal(balances["lockedAmount"]))
            balances["available"] = _fmt(free)
        else:
            balances["available"] = _amount(available, "available")
        with self._lock:
            vault = self._vault(str(vault_id))
            if vault_name is not None:
                vault["name"] = vault_name
            vault["assets"][asset] = {
                "id": asset, "total": balances["total"], "balance": balances["total"],
                "available": balances["available"], "pending": balances["pending"],
                "frozen": balances["frozen"], "lockedAmount": balances["lockedAmount"],
                "staked": balances["staked"]}

    def remove_vault_asset(self, vault_id: str, asset: str) -> None:
        """Drop an asset wallet from a vault (no-op when absent)."""
        with self._lock:
            vault = self._vaults.get(str(vault_id))
            if vault is not None:
                vault["assets"].pop(asset, None)

    def remove_vault(self, vault_id: str) -> None:
        with self._lock:
            self._vaults.pop(str(vault_id), None)

    def vault_accounts(self) -> list[dict[str, Any]]:
        """The truth, as ``GET /v1/vault/accounts/{id}`` would return each vault, by id."""
        with self._lock:
            return [self._wire_vault(v) for _, v in sorted(self._vaults.items(),
                                                            key=lambda kv: _sort_key(kv[0]))]

    def vault_assets(self) -> list[dict[str, Any]]:
        """The truth of ``GET /v1/vault/assets``: per-asset sums across vaults."""
        with self._lock:
            return self._aggregate(list(self._vaults.values()))

    def set_clock_offset(self, seconds: float) -> None:
        """Skew the server clock (positive = server ahead) for the JWT iat/exp checks."""
        with self._lock:
            self._clock_offset = float(seconds)

    def now(self) -> float:
        """The server clock, offset included."""
        return time.time() + self._clock_offset

    def add_api_key(self, api_key: str, public_key: str) -> None:
        """Register another API user by its public key PEM (e.g. a second desk)."""
        with self._lock:
            self._public_keys[api_key] = load_public_key(public_key)

    def reset(self) -> None:
        """Forget vaults, requests, faults, clock offset and extra API users; keep the key."""
        self.faults.clear()
        with self._lock:
            self._vaults.clear()
            self.requests.clear()
            self.faults.fired.clear()
            self._clock_offset = 0.0
            self._public_keys = {self.api_key: self._public_keys[self.api_key]}

    # -- internals -------------------------------------------------------------------------------
    def _vault(self, vault_id: str) -> dict[str, Any]:
        vault = self._vaults.get(vault_id)
        if vault is None:
            vault = {"id": vault_id, "name": f"Vault {vault_id}", "hiddenOnUI": False,
                     "autoFuel": False, "assets": {}}
            self._vaults[vault_id] = vault
        return vault

    @staticmethod
    def _wire_vault(vault: dict[str, Any]) -> dict[str, Any]:
        wire = {k: v for k, v in vault.items() if k != "assets"}
        wire["assets"] = [dict(asset) for asset in vault["assets"].values()]
        return wire

    @staticmethod
    def _aggregate(vaults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sums: dict[str, dict[str, Decimal]] = {}
        for vault in vaults:
            for asset_id, asset in vault["assets"].items():
                acc = sums.setdefault(asset_id, dict.fromkeys(AMOUNT_FIELDS, Decimal(0)))
                for field in AMOUNT_FIELDS:
                    acc[field] += Decimal(asset[field])
        return [{"id": asset_id, **{f: _fmt(v) for f, v in acc.items()}}
                for asset_id, acc in sorted(sums.items())]

    # -- app ----------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_middleware(),
                                           self.faults.middleware(_fireblocks_error_body)])
        app.add_routes(self.faults.admin_routes())
        app.add_routes([
            web.get("/__admin/health", self._admin_health),
            web.get("/__admin/vaults", self._admin_vaults),
            web.post("/__admin/vaults/balance", self._admin_set_balance),
            web.delete("/__admin/vaults/{vault_id}/{asset_id}", self._admin_remove_asset),
            web.post("/__admin/clock", self._admin_clock),
            web.post("/__admin/reset", self._admin_reset),
            web.get("/__admin/requests", self._admin_requests),
            web.get("/v1/vault/accounts_paged", self._api(self._accounts_paged)),
            web.get("/v1/vault/assets", self._api(self._assets)),
            web.get("/v1/vault/accounts/{vault_id}", self._api(self._account)),
            web.get("/v1/vault/accounts/{vault_id}/{asset_id}", self._api(self._account_asset)),
            web.route("*", "/v1/{tail:.*}", self._not_found),
        ])
        return app

    def _auth_middleware(self) -> Any:
        @web.middleware
        async def authenticate(request: web.Request,
                               handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                               ) -> web.StreamResponse:
            if not request.path.startswith("/v1/"):
                return await handler(request)
            entry: dict[str, Any] = {"method": request.method, "path": request.path,
                                     "uri": request.raw_path, "query": dict(request.query),
                                     "verified": False, "status": None, "error_code": None,
                                     "received_at": time.time()}
            with self._lock:
                self.requests.append(entry)
            body = await request.read()
            try:
                self._verify(request, body)
            except FireblocksApiError as exc:
                entry["status"], entry["error_code"] = exc.status, exc.code
                return exc.response()
            entry["verified"] = True
            response = await handler(request)
            entry["status"] = response.status
            if response.status >= 400 and isinstance(response, web.Response) \
                    and isinstance(response.body, bytes):
                with contextlib.suppress(ValueError, AttributeError):
                    entry["error_code"] = json.loads(response.body).get("code")
            return response

        return authenticate

    def _verify(self, request: web.Request, body: bytes) -> None:
        """Fireblocks' request authentication; raises the 401 it would answer."""
        header = request.headers.get("Authorization", "")
        if not header:
            raise _auth_error(-3, "Unauthorized: JWT is missing")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise _auth_error(-5, "Unauthorized: Invalid token format")
        api_key = request.headers.get("X-API-Key", "")
        if not api_key:
            raise _auth_error(-2, "Unauthorized: Missing API key")
        with self._lock:
            public_key = self._public_keys.get(api_key)
        if public_key is None:
            raise _auth_error(-7, "Unauthorized: Token was not accepted.")
        try:
            claims = jwt.decode(header[7:].strip(), public_key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False, "verify_aud": False,
                                         "verify_iss": False, "verify_sub": False})
        except jwt.InvalidSignatureError as exc:
            raise _auth_error(-1, "invalid signature") from exc
        except jwt.InvalidTokenError as exc:
            raise _auth_error(-5, "Unauthorized: Invalid token format") from exc
        if any(claim not in claims for claim in REQUIRED_CLAIMS) or not all(
                isinstance(claims[c], int | float) and not isinstance(claims[c], bool)
                for c in ("iat", "exp")):
            raise _auth_error(-5, "Unauthorized: Invalid token format")
        if claims["sub"] != api_key:
            raise _auth_error(-6, "Unauthorized: Wrong user in the JWT")
        if claims["uri"] != request.raw_path:
            raise _auth_error(-4, "Unauthorized: Wrong URL in the JWT")
        if claims["bodyHash"] != hashlib.sha256(body).hexdigest():
            raise _auth_error(-7, "Unauthorized: Token was not accepted (body hash mismatch).")
        now = self.now()
        if claims["exp"] + self.clock_leeway_seconds < now:
            raise _auth_error(-10, "The request has expired.")
        if claims["iat"] - self.clock_leeway_seconds > now:
            raise _auth_error(-12, "The request is with a future issuance timestamp (iat).")

    @staticmethod
    def _api(fn: Callable[[web.Request], Any]) -> Callable[[web.Request],
                                                            Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                return web.json_response(fn(request))
            except FireblocksApiError as exc:
                return exc.response()

        return handle

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"message": f"Not found: {request.method} {request.path}",
                                  "code": 404}, status=404)

    # -- endpoints ----------------------------------------------------------------------------
    def _accounts_paged(self, request: web.Request) -> dict[str, Any]:
        query = request.query

        def invalid(reason: str) -> FireblocksApiError:
            return FireblocksApiError(400, 1000,
                                      f"GetVaultAccounts request has invalid values: {reason}")

        try:
            limit = int(float(query.get("limit", DEFAULT_PAGE_LIMIT)))
        except ValueError as exc:
            raise invalid("limit") from exc
        if not 1 <= limit <= MAX_PAGE_LIMIT:
            raise invalid("limit")
        order = query.get("orderBy", "DESC").upper()
        if order not in ("ASC", "DESC"):
            raise invalid("orderBy")
        threshold: Decimal | None = None
        if "minAmountThreshold" in query:
            try:
                threshold = Decimal(query["minAmountThreshold"])
            except InvalidOperation as exc:
                raise invalid("minAmountThreshold") from exc
        if "before" in query and "after" in query:
            raise invalid("before and after are exclusive")
        prefix, suffix = query.get("namePrefix"), query.get("nameSuffix")
        asset_id = query.get("assetId")

        def selected(vault: dict[str, Any]) -> bool:
            if prefix and not vault["name"].startswith(prefix):
                return False
            if suffix and not vault["name"].endswith(suffix):
                return False
            assets = vault["assets"]
            if asset_id is not None and asset_id not in assets:
                return False
            if threshold is not None:
                pool = [assets[asset_id]] if asset_id is not None else list(assets.values())
                return any(Decimal(a["total"]) > threshold for a in pool)
            return True

        with self._lock:
            vaults = [v for v in self._vaults.values() if selected(v)]
            vaults.sort(key=lambda v: _sort_key(v["id"]), reverse=order == "DESC")
            keys = [_sort_key(v["id"]) for v in vaults]

            def comes_after(key: tuple[int, int, str], cursor: tuple[int, int, str]) -> bool:
                return key > cursor if order == "ASC" else key < cursor

            if "after" in query:
                cursor = _sort_key(_decode_cursor(query["after"]))
                start = next((i for i, k in enumerate(keys) if comes_after(k, cursor)), len(keys))
                stop = start + limit
            elif "before" in query:
                cursor = _sort_key(_decode_cursor(query["before"]))
                stop = next((i for i, k in enumerate(keys) if not comes_after(cursor, k)),
                            len(keys))
                start = max(0, stop - limit)
            else:
                start, stop = 0, limit
            page = vaults[start:stop]
            has_previous = start > 0
            has_next = start + len(page) < len(vaults)
            accounts = [self._wire_vault(v) for v in page]

        result: dict[str, Any] = {"accounts": accounts, "paging": {}}
        keep = [(k, v) for k, v in query.items() if k not in ("before", "after")]
        base = f"{request.url.origin()}/v1/vault/accounts_paged"
        if page and has_previous:
            result["paging"]["before"] = _encode_cursor(page[0]["id"])
            result["previousUrl"] = f"{base}?{urlencode([*keep, ('before', result['paging']['before'])])}"
        if page and has_next:
            result["paging"]["after"] = _encode_cursor(page[-1]["id"])
            result["nextUrl"] = f"{base}?{urlencode([*keep, ('after', result['paging']['after'])])}"
        return result

    def _assets(self, request: web.Request) -> list[dict[str, Any]]:
        prefix = request.query.get("accountNamePrefix")
        suffix = request.query.get("accountNameSuffix")
        with self._lock:
            vaults = [v for v in self._vaults.values()
                      if (not prefix or v["name"].startswith(prefix))
                      and (not suffix or v["name"].endswith(suffix))]
            return self._aggregate(vaults)

    def _account(self, request: web.Request) -> dict[str, Any]:
        vault_id = request.match_info["vault_id"]
        with self._lock:
            vault = self._vaults.get(vault_id)
            if vault is None:
                raise FireblocksApiError(404, 1004, f"Vault account {vault_id} was not found")
            return self._wire_vault(vault)

    def _account_asset(self, request: web.Request) -> dict[str, Any]:
        vault_id, asset_id = request.match_info["vault_id"], request.match_info["asset_id"]
        with self._lock:
            vault = self._vaults.get(vault_id)
            if vault is None:
                raise FireblocksApiError(404, 1004, f"Vault account {vault_id} was not found")
            asset = vault["assets"].get(asset_id)
            if asset is None:
                raise FireblocksApiError(404, 1006, f"Asset {asset_id} doesn't exist in vault "
                                                    f"account {vault_id}")
            return dict(asset)

    # -- admin over HTTP ---------------------------------------------------------------------
    async def _admin_health(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True, "vaults": len(self._vaults)})

    async def _admin_vaults(self, _: web.Request) -> web.Response:
        return web.json_response(self.vault_accounts())

    async def _admin_set_balance(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            optional = {k: body[k] for k in ("available", "pending", "frozen", "locked",
                                             "staked", "vault_name") if k in body}
            self.set_vault_balance(str(body["vault_id"]), str(body["asset"]), body["total"],
                                   **optional)
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"ok": False, "error": repr(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _admin_remove_asset(self, request: web.Request) -> web.Response:
        self.remove_vault_asset(request.match_info["vault_id"], request.match_info["asset_id"])
        return web.json_response({"ok": True})

    async def _admin_clock(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.set_clock_offset(float(body.get("offset_seconds", 0)))
        return web.json_response({"ok": True, "offset_seconds": self._clock_offset})

    async def _admin_reset(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _admin_requests(self, _: web.Request) -> web.Response:
        with self._lock:
            return web.json_response(list(self.requests))
