"""Read-only Fireblocks custodian adapter: vault balances as BALANCE_COLUMNS frames.

Uses the ``fireblocks`` SDK (35.x). Decisions:

* **lazy, narrow import** (:mod:`risk_monitor.adapters.lazy_packages`): the API client and the
  models of the one response read (~0.1 s instead of ~3 s), at the first
  :meth:`FireblocksCustodian.fetch_balances`. The one operation, ``get_paged_vault_accounts``,
  is sent as the SDK's generated ``VaultsApi`` method sends it (:func:`_paged_vault_accounts`)
  without importing ``VaultsApi``, whose module loads the models of its ~50 other operations
  (~0.16 s more in every Dagster run process).
* **PEM parsed once**: the SDK's ``BearerTokenProvider`` gives PyJWT the PEM string, re-parsed
  on every request (~44 ms CPU); we give its public ``token_provider`` a loaded key object
  instead (~2 ms of signing a call, no SDK internals patched).
* **read-only**: a ``ThreadedApiClient`` subclass behind the read-only gate
  (:mod:`risk_monitor.adapters.read_only_gate`) refuses every request but
  ``GET /vault/accounts_paged`` on the configured host, before signing or sending.
* **amounts**: parsed as ``Decimal`` (exact), ``used = total - available`` (pending, frozen,
  locked and staked funds), then float64 in the frame (15-16 significant digits: ample for
  risk, not for accounting).
* **asset ids** are Fireblocks' own (``BTC``, ``USDT_ERC20``), upper-cased: one currency on two
  networks stays two rows, because merging them hides where the funds sit.
* **timestamps**: the listing carries none, so ``timestamp`` = ``received_at``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache, partial
from typing import Any

import pandas as pd

from risk_monitor.adapters.errors import map_exception, typed_parser, with_retry_after
from risk_monitor.adapters.lazy_packages import FIREBLOCKS, install_lazy_packages
from risk_monitor.adapters.read_only_gate import ReadOnlyGate, fireblocks_gate, gate_urllib3_pool
from risk_monitor.domain.schemas import balances_frame
from risk_monitor.platform.clock import Clock, utc_now
from risk_monitor.platform.errors import (
    ConfigError,
    DataValidationError,
    MissingDataError,
    SourceAuthenticationError,
)
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.resilience import SourceGuard
from risk_monitor.platform.settings import CustodianSettings, Settings

log = get_logger(__name__)

PRODUCTION_BASE_PATH = "https://api.fireblocks.io/v1"
MAX_PAGES = 1000  # a runaway cursor must not loop forever

def _amount(value: Any, field: str, vault: str, asset: str) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise DataValidationError(f"vault {vault} asset {asset}: {field}={value!r} is not a "
                                  "number") from None
    if not number.is_finite():
        raise DataValidationError(f"vault {vault} asset {asset}: {field}={value!r} is not finite")
    return number


@typed_parser
def map_vault_accounts(accounts: list[dict[str, Any]], *, custodian: str,
                       received_at: datetime) -> pd.DataFrame:
    """Vault accounts (as dicts: ``id``, ``assets[{id,total,available,...}]``) -> BALANCE_COLUMNS.

    All-zero assets are dropped. A non-numeric or infinite amount becomes NaN for that asset
    (logged), so validation rejects that row alone: it reaches risk as a missing asset of that
    vault, never as zero, and the vault's other assets still count.
    """
    rows = []
    stamp = pd.Timestamp(received_at)
    for account in accounts:
        vault = str(account.get("id") or "")
        for asset in account.get("assets") or []:
            asset_id = str(asset.get("id") or "").upper()
            try:
                total = _amount(asset.get("total", asset.get("balance")), "total", vault,
                                asset_id)
                available = _amount(asset.get("available"), "available", vault, asset_id)
            except DataValidationError as exc:
                # this asset only: NaN amounts, which the schema rejects for this row alone
                log.warning("custodian amount not a finite number", custodian=custodian,
                            vault=vault, asset=asset_id, error=exc.message[:200])
                total = available = Decimal("NaN")
            if total == 0 and available == 0:
                continue
            rows.append({
                "source_type": "custodian", "venue": custodian, "account": vault,
                "asset": asset_id, "free": float(available), "used": float(total - available),
                "total": float(total), "timestamp": stamp, "received_at": stamp})
    return balances_frame(rows)


#: the response model of ``GET /vault/accounts_paged``, as the SDK names it, and its module
VAULTS_PAGE_MODEL = "VaultAccountsPagedResponse"
VAULTS_PAGE_MODULE = "fireblocks.models.vault_accounts_paged_response"


def _paged_vault_accounts(client: Any, *, limit: int, after: str | None = None,
                          _request_timeout: float | None = None) -> Any:
    """One page of vault accounts (a Future of the SDK's ``ApiResponse``), sent as the SDK's
    generated ``VaultsApi.get_paged_vault_accounts`` sends it: same query order, ``Accept``
    header, no auth settings (the client signs every call), same response model."""
    query: list[tuple[str, Any]] = []
    if after is not None:
        query.append(("after", after))
    query.append(("limit", limit))
    request = client.param_serialize(
        method="GET", resource_path="/vault/accounts_paged", query_params=query,
        header_params={"Accept": "application/json"}, auth_settings=[])
    return client.call_api(*request, _request_timeout=_request_timeout,
                           _response_types_map={"200": VAULTS_PAGE_MODEL},
                           _operation_id="get_paged_vault_accounts")


@cache
def _read_only_client_class() -> type:
    install_lazy_packages(FIREBLOCKS)
    from fireblocks.threaded_api_client import ThreadedApiClient  # ≈ 0.3 s, once

    class ReadOnlyApiClient(ThreadedApiClient):  # type: ignore[misc]
        """The SDK's client behind the read-only gate (module docstring)."""

        def __init__(self, configuration: Any, gate: ReadOnlyGate) -> None:
            super().__init__(configuration)
            self.read_only_gate = gate
            gate_urllib3_pool(self.rest_client.pool_manager, gate)

        def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.read_only_gate.check(method, url)
            return super().call_api(method, url, *args, **kwargs)

    return ReadOnlyApiClient


def load_sdk() -> None:
    """Import the SDK modules a vault read needs, e.g. in a warm-up thread before the first
    read (the narrow set, see :mod:`risk_monitor.adapters.lazy_packages`)."""
    _read_only_client_class()
    importlib.import_module("fireblocks.bearer_token_provider")
    importlib.import_module(VAULTS_PAGE_MODULE)


class FireblocksCustodian:
    """Read-only Fireblocks workspace (implements ``ports.Custodian``)."""

    def __init__(self, settings: CustodianSettings, *, guard: SourceGuard,
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        self.venue = settings.id
        self.endpoint_override = settings.endpoint_override
        self._guard = guard
        self._clock = clock
        self._client: Any | None = None
        self._list_vaults: Callable[..., Any] | None = None
        self._key: Any | None = None  # the API private key, parsed once (never logged)

    @property
    def client(self) -> Any:
        """The read-only SDK API client (built on first use), for inspection."""
        self._connect()
        return self._client

    def check_credentials(self) -> tuple[str, str]:
        """The API key and PEM from the environment, or a clear error naming the variables."""
        api_key = Settings.secret(self.settings.api_key_env, key="custodians.api_key_env")
        pem = Settings.secret(self.settings.secret_key_env, key="custodians.secret_key_env")
        missing = [name for name, value in ((self.settings.api_key_env, api_key),
                                            (self.settings.secret_key_env, pem)) if value is None]
        if missing or api_key is None or pem is None:
            raise SourceAuthenticationError(
                f"custodian {self.venue!r}: credentials missing; set the environment "
                f"variable(s) {', '.join(missing)}", source=self.venue,
                details={"missing_env": missing})
        return api_key.get_secret_value(), pem.get_secret_value()

    def _connect(self) -> Callable[..., Any]:
        if self._list_vaults is not None:
            return self._list_vaults
        api_key, pem = self.check_credentials()
        key = self._private_key(pem)
        install_lazy_packages(FIREBLOCKS)
        from fireblocks.bearer_token_provider import BearerTokenProvider
        from fireblocks.client_configuration import ClientConfiguration

        base_path = self.settings.endpoint_override or PRODUCTION_BASE_PATH
        if self.settings.endpoint_override:
            log.warning("custodian endpoint overridden: not the production host",
                        custodian=self.venue, endpoint_override=base_path)
        client = _read_only_client_class()(
            ClientConfiguration(api_key=api_key, secret_key=pem, base_path=base_path),
            fireblocks_gate(self.venue, base_path))
        client.token_provider = BearerTokenProvider(api_key, key)  # type: ignore[arg-type]
        self._client = client
        self._list_vaults = partial(_paged_vault_accounts, client)
        return self._list_vaults

    def _private_key(self, pem: str) -> Any:
        """The API key object, parsed once per custodian: a reconnect needs the same key."""
        if self._key is None:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            try:
                self._key = load_pem_private_key(pem.encode(), password=None)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"custodian {self.venue!r}: the private key in "
                                  f"{self.settings.secret_key_env} is not a valid unencrypted "
                                  f"PEM ({type(exc).__name__})",
                                  key="custodians.secret_key_env") from None
        return self._key

    def _page(self, list_vaults: Callable[..., Any], after: str | None) -> Any:
        timeout = self.settings.timeout_s

        def attempt() -> Any:
            try:
                future = list_vaults(limit=self.settings.page_size, after=after,
                                     _request_timeout=timeout)
                return future.result(timeout=timeout + 1.0).data
            except Exception as exc:
                raise with_retry_after(
                    map_exception(exc, source=self.venue, endpoint="get_paged_vault_accounts"),
                    getattr(exc, "headers", None)) from exc

        return self._guard.call("get_paged_vault_accounts", attempt, timeout_s=timeout + 2.0)

    def fetch_vault_accounts(self) -> list[dict[str, Any]]:
        """Every vault account (id, name, assets) as plain dicts, paging with the ``after`` cursor."""
        list_vaults = self._connect()
        accounts: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            page = self._page(list_vaults, after)
            for account in (page.accounts or []) if page is not None else []:
                accounts.append(account.to_dict())
            after = page.paging.after if page is not None and page.paging is not None else None
            if not after:
                break
        else:
            raise DataValidationError(f"custodian {self.venue!r}: more than {MAX_PAGES} pages; "
                                      "the paging cursor does not end", source=self.venue)
        return accounts

    def fetch_balances(self) -> pd.DataFrame:
        """Balances of the configured vaults (every vault when none are configured)."""
        accounts = self.fetch_vault_accounts()
        received = self._clock()
        wanted = self.settings.vault_account_ids
        if wanted is not None:
            found = {str(a.get("id")) for a in accounts}
            missing = [v for v in wanted if v not in found]
            if missing:
                raise MissingDataError(f"custodian {self.venue!r}: configured vault account(s) "
                                       f"{', '.join(missing)} not found", source=self.venue,
                                       details={"missing_vaults": missing})
            accounts = [a for a in accounts if str(a.get("id")) in set(wanted)]
        try:
            return map_vault_accounts(accounts, custodian=self.venue, received_at=received)
        except DataValidationError as exc:
            exc.source = self.venue
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._list_vaults = None
