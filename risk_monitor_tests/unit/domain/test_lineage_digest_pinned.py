"""The audit digest and the data versions, pinned on desk-sized and awkward inputs: the hot
path computes them through caches and fast paths (``audit_chain``, ``domain/lineage.py``),
and every stored alert and Dagster event names them, so the same inputs must give the same
bytes whichever way they were computed (values taken from the plain implementation)."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from risk_monitor.domain.audit_chain import canonical, versions_digest
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.lineage import content_version, evaluated_inputs, venue_versions
from risk_monitor.domain.model import Collected, SourceKind, SourceStatus
from risk_monitor_tests.unit.domain.test_lineage_versions import quotes

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class _Side(enum.Enum):
    LONG = "long"


class _Level(enum.IntEnum):
    TWO = 2


def _status(kind: SourceKind, venue: str, rows: int, ok: bool = True) -> SourceStatus:
    return SourceStatus(kind=kind, venue=venue, account="main", ok=ok, as_of=T0, rows=rows)


def desk_quotes(tick: int = 0) -> Collected:
    """200 quotes on two venues, every kind of quote column; ``tick`` moves one quote."""
    rows = []
    for venue in ("binance", "okx"):
        for i in range(100):
            last = 100.0 + i + i / 7 + (0.5 if tick and i == tick else 0.0)
            rows.append({"venue": venue, "instrument": f"S{i}/USDT:USDT", "base": f"S{i}",
                         "quote": "USDT", "bid": last - 0.01,
                         "ask": float("nan") if i == 3 else last + 0.01, "last": last,
                         "mark": -0.0 if i == 5 else last,
                         "timestamp": pd.Timestamp(T0 + timedelta(milliseconds=i)),
                         "received_at": pd.Timestamp(T0)})
    return Collected(pd.DataFrame(rows), (_status(SourceKind.MARKET, "binance", 100),
                                          _status(SourceKind.MARKET, "okx", 100, ok=False)))


def desk_positions() -> Collected:
    rows = [{"venue": ("binance", "okx")[i % 2], "account": "main",
             "instrument": f"S{i}/USDT:USDT", "contracts": 1.5 * i, "leverage": 10,
             "realized_pnl": float("nan"), "side": None if i == 7 else "long",
             "timestamp": pd.Timestamp(T0)} for i in range(60)]
    return Collected(pd.DataFrame(rows), (_status(SourceKind.EXCHANGE, "binance", 30),
                                          _status(SourceKind.EXCHANGE, "okx", 30)))


def desk_balances() -> Collected:
    rows = [{"venue": v, "asset": "USDT", "total": 1.1e6} for v in ("binance", "okx")]
    rows += [{"venue": "fireblocks", "asset": a, "total": 10.0} for a in ("BTC", "ETH")]
    return Collected(pd.DataFrame(rows), (
        _status(SourceKind.EXCHANGE, "binance", 1), _status(SourceKind.EXCHANGE, "okx", 1),
        _status(SourceKind.CUSTODIAN, "fireblocks", 2)))


def _snapshot(tick: int = 0) -> RiskSnapshot:
    return RiskSnapshot(positions=desk_positions(), balances=desk_balances(),
                        prices=desk_quotes(tick), now=T0)


AWKWARD: dict[Any, Any] = {
    "ints": [0, 1, -7, 10**16, True, False], "floats": [2.0, 1e16, -0.0, 0.1, float("nan"),
                                                        float("inf"), -float("inf")],
    "none": None, "text": "café \"quoted\" \\ \n \u2028 ☃", 5: "a non-text key",
    "times": [datetime(2026, 3, 2, 9, 0), datetime(2026, 3, 2, 9, 0, 1, 5, tzinfo=UTC),
              datetime(2026, 3, 2, 11, 0, tzinfo=timezone(timedelta(hours=2))),
              date(2026, 3, 2)],
    "enums": (_Side.LONG, _Level.TWO), "nested": {"b": {"z": [], "a": {}}, "a": ()},
    "other": timedelta(seconds=3),
}


#: the digests and the canonical text the plain implementation gave for these inputs
DIGEST_V1 = "7fe3ddd58b9eab086515a2973ded641e5d6d7b7a1cf0fa653dc8b49c0d9900b8"
DIGEST_V2 = "205fd6d25f8e67a0f816a6f116128db54457bfce85ae0944cd9bbab9b827af45"
AWKWARD_TEXT = (
    '{"5":"a non-text key","enums":["long","2.0"],'
    '"floats":["2.0","1e+16","-0.0","0.1",null,null,null],'
    '"ints":["0.0","1.0","-7.0","1e+16",true,false],"nested":{"a":[],"b":{"a":{},"z":[]}},'
    '"none":null,"other":"0:00:03","text":"café \\"quoted\\" \\\\ \\n \u2028 ☃",'
    '"times":["2026-03-02T09:00:00.000000+00:00","2026-03-02T09:00:01.000005+00:00",'
    '"2026-03-02T09:00:00.000000+00:00","2026-03-02"]}')


def test_the_digest_of_input_versions_is_pinned() -> None:
    assert versions_digest(evaluated_inputs(_snapshot(), "cfg-v1").versions) == DIGEST_V1
    assert versions_digest(evaluated_inputs(_snapshot(tick=42), "cfg-v2").versions) == DIGEST_V2
    snapshot = _snapshot()
    again = evaluated_inputs(snapshot, "cfg-v1").versions  # the cached entries: the same bytes
    assert versions_digest(again) == versions_digest(evaluated_inputs(snapshot, "cfg-v1").versions)
    assert versions_digest(again) == DIGEST_V1


def test_the_digest_of_awkward_values_is_pinned() -> None:
    assert canonical(AWKWARD) == AWKWARD_TEXT
    assert versions_digest(AWKWARD) == \
        "1e6a798c8ff173ecc0e8f159089cdf6c972e9449cc4e1ce0baf614922615d696"
    assert versions_digest({}) == \
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert versions_digest({"limit_config": {"data_version": "v", "as_of": None,
                                             "rows": None}}) == \
        "e3060a2076f847d53bf1c8e77de660bdd32709583edb3898fd3041489d0b08d3"


def test_desk_sized_data_versions_are_pinned() -> None:
    found = {name: {venue: v.data_version for venue, v in venue_versions(collected).items()}
             for name, collected in (("quotes", desk_quotes()), ("moved", desk_quotes(42)),
                                     ("positions", desk_positions()),
                                     ("balances", desk_balances()))}
    assert found == {
        "quotes": {"binance": "c8e2f5c56e9093d8bf16db2b", "okx": "44ac2aca45a277c13b6f011d"},
        "moved": {"binance": "c81807a38c8b106bb3e712ed", "okx": "a9d69db209671bf21b52451c"},
        "positions": {"binance": "822e169d1facc52a93ef0045",
                      "okx": "d0debf0d0ee003482a2549fb"},
        "balances": {"binance": "48cc17027a6c63d3bd753bec",
                     "fireblocks": "057bbef4065ae4fd4d082a26",
                     "okx": "bde6be34fb96933163f93a57"}}


def test_every_kind_of_column_is_pinned() -> None:
    """Extension arrays, object columns of mixed values, every time unit, small ints, -0.0 and
    NaN in float32: each column kind's hash, as the plain implementation gave it."""
    base = quotes()
    frame = base.frame.assign(
        ms=lambda f: f["timestamp"].dt.as_unit("ms"),
        naive=lambda f: f["timestamp"].dt.tz_localize(None),
        n=pd.array([1, None, 3], dtype="Int64"), text=pd.array(["a", None, "c"], dtype="string"),
        flag=[True, False, True], objects=np.array([None, 1.5, "x"], dtype=object),
        kind=pd.Categorical(["a", "b", "a"]), small=np.array([1, 2, 3], dtype=np.uint8),
        duration=pd.to_timedelta([1, 2, 3], "s"), ints=np.array([0, -5, 2**40], dtype=np.int64),
        f32=np.array([-0.0, np.nan, 1.5], dtype=np.float32))
    for variant in (frame, frame.copy()):  # as assigned, and with its blocks consolidated
        assert content_version(Collected(variant, base.sources)) == "f4adf47d89c0cf3830567658"
