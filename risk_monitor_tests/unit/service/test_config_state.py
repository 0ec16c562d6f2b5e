"""Applying configuration documents: validation, atomic swap, keep-last-good, disk cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from risk_monitor.adapters.config_service import (
    SOURCE_CACHE,
    SOURCE_FILE,
    SOURCE_SERVICE,
    AppliedConfig,
    ConfigDocument,
    ConfigState,
    document_version,
    load_limits_file,
    validate_document,
)
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.platform.errors import ConfigError
from risk_monitor_tests.fixtures.service import desk_limits, write_limits


def service_doc(document: dict[str, Any], component: str = "risk-monitor") -> ConfigDocument:
    return ConfigDocument(component=component, version=document_version(document),
                          document=document, source=SOURCE_SERVICE)


def _btc_breach(config: LimitConfig) -> float:
    return next(d for d in config.limits if d.id == "btc-binance-notional").breach


def test_version_is_a_content_hash_independent_of_key_order() -> None:
    a = {"limits": desk_limits(), "alert_routing": {"x": 1, "y": 2}}
    b = {"alert_routing": {"y": 2, "x": 1}, "limits": desk_limits()}
    assert document_version(a) == document_version(b)
    assert document_version(a) != document_version({"limits": desk_limits(btc_breach=2e6)})
    assert len(document_version(a)) == 16


@pytest.mark.parametrize(("document", "key"), [
    ({}, "limits"),
    ({"limits": []}, "limits"),
    ({"limits": desk_limits(), "surprise": 1}, "surprise"),
    ({"limits": desk_limits(), "alert_routing": []}, "alert_routing"),
    ({"limits": desk_limits(), "venues": {"id": "x"}}, "venues"),
    ({"limits": desk_limits(btc_warn=2e6, btc_breach=1e6)}, "limits.limits[0].warn"),
])
def test_invalid_documents_name_the_key(document: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_document(document)
    assert info.value.key == key


def test_apply_swaps_atomically_and_keeps_last_good(tmp_path: Path) -> None:
    state = ConfigState("risk-monitor", cache_path=tmp_path / "c.json")
    seen: list[AppliedConfig] = []
    state.on_applied(seen.append)
    good = service_doc({"limits": desk_limits()})
    assert state.apply(good) is True
    assert state.current is not None and state.current.version == good.version
    assert _btc_breach(state.current.limits) == 1e6

    bad = service_doc({"limits": desk_limits(btc_warn=5e6, btc_breach=1e6)})
    assert state.apply(bad) is False
    assert state.current.version == good.version  # still the last good one
    assert state.rejected == 1 and state.last_seen_version == bad.version
    assert [s.version for s in seen] == [good.version]

    assert state.apply(good) is True  # same version again: no second notification
    assert len(seen) == 1


def test_listener_failure_does_not_undo_the_apply() -> None:
    state = ConfigState("risk-monitor")

    def broken(_: AppliedConfig) -> None:
        raise RuntimeError("database down")

    state.on_applied(broken)
    assert state.apply(service_doc({"limits": desk_limits()})) is True
    assert state.current is not None


def test_late_listener_hears_the_current_config() -> None:
    state = ConfigState("risk-monitor")
    state.apply(service_doc({"limits": desk_limits()}))
    seen: list[str] = []
    state.on_applied(lambda applied: seen.append(applied.version))
    assert state.current is not None and seen == [state.current.version]


def test_cache_round_trip_and_corruption(tmp_path: Path) -> None:
    cache = tmp_path / "sub" / "cache.json"
    state = ConfigState("risk-monitor", cache_path=cache)
    doc = service_doc({"limits": desk_limits(btc_breach=3e6, btc_warn=2e6)})
    state.apply(doc)
    cached = ConfigState("risk-monitor", cache_path=cache).read_cache()
    assert cached is not None
    assert (cached.source, cached.version, cached.document) == (SOURCE_CACHE, doc.version,
                                                                doc.document)
    # a cache of another component or with a tampered document is ignored
    assert ConfigState("other", cache_path=cache).read_cache() is None
    body = json.loads(cache.read_text())
    body["document"]["limits"]["limits"][0]["breach"] = 9e9
    cache.write_text(json.dumps(body))
    assert ConfigState("risk-monitor", cache_path=cache).read_cache() is None
    cache.write_text("{not json")
    assert ConfigState("risk-monitor", cache_path=cache).read_cache() is None


def test_file_documents_are_not_cached_and_service_replaces_them(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    state = ConfigState("risk-monitor", cache_path=cache)
    base = load_limits_file(write_limits(tmp_path / "l.yaml", desk_limits()), "risk-monitor")
    assert base.source == SOURCE_FILE
    state.apply(base)
    assert not cache.exists() and state.service_synced is False
    same = service_doc(dict(base.document))
    assert same.version == base.version
    state.apply(same)  # same content from the service: now in force *as* the service's
    assert state.current is not None and state.current.source == SOURCE_SERVICE
    assert state.service_synced and cache.exists()


def test_unreadable_limits_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_limits_file(tmp_path / "missing.yaml", "risk-monitor")
