"""The limit document: validation errors name the field, versions are content hashes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from risk_monitor.domain.limits import KIND_SPECS, LimitKind, load_limit_config
from risk_monitor.platform.errors import ConfigError

DEFAULT_FILE = Path(__file__).resolve().parents[3] / "risk_monitor" / "config" / "limits.yaml"


def _doc(*limits: dict[str, Any]) -> dict[str, Any]:
    return {"venues": ["binance"], "limits": list(limits)}


def _limit(**overrides: Any) -> dict[str, Any]:
    base = {"id": "l", "kind": "max_notional", "scope": {"venue": "binance"}, "warn": 8, "breach": 10}
    return {**base, **overrides}


def _error(document: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_limit_config(document)
    return info.value


def test_warn_above_breach_names_the_field() -> None:
    doc = _doc(*(_limit(id=f"l{i}") for i in range(3)), _limit(id="l3", warn=12, breach=10))
    err = _error(doc)
    assert "limits[3].warn" in str(err) and "must be below breach" in str(err)
    assert err.key == "limits[3].warn"


def test_lower_is_worse_kind_wants_warn_above_breach() -> None:
    err = _error(_doc(_limit(kind="liquidation_distance", warn=5, breach=8)))
    assert "limits[0].warn" in str(err) and "above breach" in str(err)
    ok = load_limit_config(_doc(_limit(kind="liquidation_distance", warn=15, breach=8)))
    assert ok.limits[0].warn == 15


@pytest.mark.parametrize(
    ("limit", "path", "words"),
    [
        (_limit(kind="max_risk"), "limits[0].kind", "Input should be"),
        (_limit(breach=-1), "limits[0].breach", "greater than 0"),
        (_limit(breach="lots"), "limits[0].breach", "valid number"),
        (_limit(scope={"exchange": "binance"}), "limits[0].scope.exchange", "Extra inputs"),
        (_limit(kind="daily_loss", scope={"venue": "binance"}), "limits[0].scope",
         "does not accept scope key"),
        (_limit(kind="concentration", scope={}), "limits[0].scope", "requires scope key"),
        (_limit(kind="data_age", scope={}), "limits[0].scope", "requires scope key"),
        (_limit(scope={"asset": "btc"}), "limits[0].scope.asset", "upper case"),
        (_limit(scope={"instrument": "BTC/USDT:USDT", "asset": "BTC"}), "limits[0].scope",
         "not both"),
        (_limit(scope={"account": "main"}), "limits[0].scope", "account needs a venue"),
        (_limit(id="Bad Id"), "limits[0].id", "pattern"),
        ({"kind": "max_notional", "breach": 1}, "limits[0].id", "Field required"),
    ],
)
def test_errors_name_the_field(limit: dict[str, Any], path: str, words: str) -> None:
    err = _error(_doc(limit))
    assert f"{path}: " in str(err) and words in str(err), str(err)


def test_duplicate_ids_and_unknown_top_level_keys() -> None:
    assert "duplicate id 'l'" in str(_error(_doc(_limit(), _limit())))
    assert "limit: Extra inputs" in str(_error({"limit": []}))
    assert "schema_version" in str(_error({"schema_version": 2}))


def test_several_errors_are_all_reported() -> None:
    err = str(_error(_doc(_limit(id="a", warn=20), _limit(id="b", kind="nope"))))
    assert "limits[0].warn" in err and "limits[1].kind" in err


def test_version_is_stable_across_key_order_and_formatting() -> None:
    a = load_limit_config(_doc(_limit()))
    reordered = {"limits": [dict(reversed(list(_limit().items())))], "venues": ["binance"]}
    b = load_limit_config(reordered)
    c = load_limit_config(_doc(_limit(warn=8.0, breach=10.0)))  # 8 vs 8.0: same number
    assert a.version == b.version == c.version
    assert len(a.version) == 16 and int(a.version, 16) >= 0


def test_version_changes_when_anything_that_matters_changes() -> None:
    base = load_limit_config(_doc(_limit())).version
    assert load_limit_config(_doc(_limit(breach=11))).version != base
    assert load_limit_config(_doc(_limit(warn=7))).version != base
    assert load_limit_config(_doc(_limit(scope={"venue": "okx"}))).version != base
    assert load_limit_config({**_doc(_limit()), "venues": ["okx"]}).version != base


def test_default_limits_file_is_valid_and_covers_every_kind() -> None:
    document = yaml.safe_load(DEFAULT_FILE.read_text())
    config = load_limit_config(document)
    kinds = {limit.kind for limit in config.limits}
    assert kinds == set(LimitKind)
    btc = next(d for d in config.limits if d.id == "binance_btc_notional")
    assert btc.kind is LimitKind.MAX_NOTIONAL
    assert btc.scope.items() == {"venue": "binance", "instrument": "BTC/USDT:USDT"}
    assert (btc.warn, btc.breach) == (800000, 1000000)
    data_age = next(limit for limit in config.limits if limit.kind is LimitKind.DATA_AGE)
    assert data_age.scope.venue == "*"
    assert set(config.venues) == {"binance", "okx", "fireblocks"}
    # same document, shuffled: same version
    shuffled = copy.deepcopy(document)
    shuffled["limits"] = [dict(reversed(list(item.items()))) for item in shuffled["limits"]]
    assert load_limit_config(dict(reversed(list(shuffled.items())))).version == config.version


def test_every_kind_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "limits.md").read_text()
    for kind in KIND_SPECS:
        assert f"`{kind.value}`" in docs
