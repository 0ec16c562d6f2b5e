"""The Fireblocks API private key is parsed once per custodian, against the Fireblocks
simulator: a reconnect (after ``close``) signs with the same key and reads the same vaults."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from risk_monitor.adapters.fireblocks_custodian import FireblocksCustodian
from risk_monitor.platform.resilience import guard_for
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.integration.collection.conftest import Sims, WriteSettings

pytestmark = pytest.mark.integration


def test_the_private_key_is_parsed_once_across_reconnects(
        sims: Sims, write_settings: WriteSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    real = serialization.load_pem_private_key

    def counting(data: bytes, password: bytes | None, *args: Any, **kwargs: Any) -> Any:
        parsed.append(1)  # the real parser still runs: the simulator checks the signatures
        return real(data, password, *args, **kwargs)

    monkeypatch.setattr(serialization, "load_pem_private_key", counting)
    settings = load_settings(write_settings(sims.settings_doc()))
    custodian = FireblocksCustodian(settings.custodians[0],
                                    guard=guard_for(settings, settings.custodians[0].id))
    try:
        first = custodian.fetch_balances()
        custodian.close()
        again = custodian.fetch_balances()  # a new SDK client, the same key object
    finally:
        custodian.close()
    assert len(first) == len(again) == 4
    assert parsed == [1]
    assert sims.fireblocks.requests and all(r["method"] == "GET" for r in sims.fireblocks.requests)
