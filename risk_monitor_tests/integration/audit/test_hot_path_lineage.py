"""Hot-path lineage: inputs hashed like the Dagster assets hash theirs, recorded with the alert,
and reported into Dagster's catalog as a `live_limit_status` materialisation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from risk_monitor import application
from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.audit_trace import trace
from risk_monitor.dagster_catalog import (
    EVALUATION_TAG,
    LIVE_ASSET,
    DagsterCatalog,
    evaluation_version,
    event_url,
    find_event,
)
from risk_monitor.defs.collection_support import data_version_of
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.lineage import evaluated_inputs
from risk_monitor.domain.model import Collected, SourceKind, SourceStatus
from risk_monitor.lineage import HotPathLineage
from risk_monitor_tests.fixtures.storage import make_result, sqlite_url

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _collected(kind: SourceKind, venue: str, rows: list[dict[str, object]]) -> Collected:
    return Collected(frame=pd.DataFrame(rows), sources=(
        SourceStatus(kind=kind, venue=venue, account="main", ok=True, as_of=T0, rows=len(rows)),))


def _snapshot() -> RiskSnapshot:
    exchange = _collected(SourceKind.EXCHANGE, "binance", [{"venue": "binance", "asset": "USDT",
                                                             "total": 1000.0}])
    custody = _collected(SourceKind.CUSTODIAN, "fireblocks", [{"venue": "fireblocks",
                                                                "asset": "BTC", "total": 2.0}])
    return RiskSnapshot(
        positions=_collected(SourceKind.EXCHANGE, "binance", [{"venue": "binance",
                                                                "instrument": "BTC/USDT:USDT"}]),
        balances=application.merge_collected(exchange, custody),
        prices=_collected(SourceKind.MARKET, "binance", [{"venue": "binance", "last": 65000.0}]),
        now=T0)


def test_hot_path_inputs_hash_like_the_dagster_assets() -> None:
    snapshot = _snapshot()
    versions = evaluated_inputs(snapshot, "cfg-v1").versions
    assert versions["market_prices"]["data_version"] == data_version_of(snapshot.prices).value
    assert versions["exchange_positions"]["data_version"] == \
        data_version_of(snapshot.positions).value
    assert versions["limit_config"]["data_version"] == "cfg-v1"
    assert versions["custodian_balances"]["rows"] == 1
    assert versions["exchange_balances"]["as_of"] == T0.isoformat()
    assert versions["custodian_balances"]["data_version"] != \
        versions["exchange_balances"]["data_version"]


def test_an_alerting_evaluation_is_recorded_with_its_inputs_and_reported_to_dagster(
        tmp_path: Path) -> None:
    storage = Storage.open(sqlite_url(tmp_path))
    (tmp_path / "dagster").mkdir()
    try:
        with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
            lineage = HotPathLineage(DagsterCatalog(instance, "http://dagster.example"))
            context = {"source": "service", "instance_id": "svc-1", "trigger": "tick",
                       "evaluation_id": "eval-1",
                       "evaluated_at": T0.isoformat(), "limit_config_version": "cfg-v1",
                       "code_version": "git:abc", "input_data_versions":
                           evaluated_inputs(_snapshot(), "cfg-v1").versions}
            raised = application.raise_alerts(storage, [make_result("BREACH", T0)], now=T0,
                                            policy=AlertPolicy(), context=context)
            [note] = raised.plan.notifications
            url = lineage.after_commit(context, raised.plan.notifications)
            assert lineage.last_event is not None
            assert url == event_url("http://dagster.example", lineage.last_event.timestamp)

            [episode] = trace(storage, note.correlation_id)
            recorded = {i["input"]: i["data_version"] for i in episode.detections[0]["inputs"]}
            expected = {k: v["data_version"] for k, v in context["input_data_versions"].items()}
            assert recorded == expected
            assert episode.detections[0]["evaluation"] == "service instance svc-1"
            assert verify(storage.engine).ok

            [record] = instance.fetch_materializations(dg.AssetKey(LIVE_ASSET), limit=5).records
            event = record.asset_materialization
            assert event is not None
            assert event.tags["dagster/data_version"] == evaluation_version(
                context["input_data_versions"])
            assert event.metadata["correlation_ids"].value == note.correlation_id
            assert event.tags[EVALUATION_TAG] == "eval-1"
            assert record.storage_id == lineage.last_event.storage_id
            assert url.endswith(f"&time={int(record.timestamp * 1000)}")
            for name, version in expected.items():
                assert event.metadata[f"input/{name}"].value == version
            prices = context["input_data_versions"]["market_prices"]["venues"]["binance"]
            assert event.metadata["input/market_prices/binance"].value == \
                prices["data_version"]
            found = find_event(instance, "eval-1", ui_url="http://dagster.example")
            assert found is not None and found.url == url
            assert find_event(instance, "eval-2") is None
    finally:
        storage.close()


def test_the_alert_context_points_the_slack_message_at_the_live_asset() -> None:
    from types import SimpleNamespace

    from risk_monitor.adapters.alert_messages import links
    from risk_monitor_tests.fixtures.storage import plan

    report = SimpleNamespace(snapshot=_snapshot(), config_version="cfg-v1")
    lineage = HotPathLineage(DagsterCatalog(None, "http://dagster.example"))
    fields = lineage.context(report)  # type: ignore[arg-type]
    versions = fields["lineage_digest"].versions  # held by the digest the alerts seal
    assert fields["dagster_data_version"] == evaluation_version(versions)
    assert fields["evaluation_id"] != lineage.context(report)["evaluation_id"]  # type: ignore[arg-type]
    assert "dagster_event_url" not in fields  # known once reported: added by chat.update
    _, [note] = plan(None, make_result("BREACH", T0))
    note = replace(note, context={**note.context, **fields})
    found = links(note, "http://dagster.example")
    assert found["Asset"] == f"http://dagster.example/assets/{LIVE_ASSET}"
    assert "Dagster event" not in found
    plain = HotPathLineage(None).context(report)  # type: ignore[arg-type]
    assert plain["data_versions"]["limit_config"] == "cfg-v1"
    assert "asset_key" not in plain  # no Dagster instance: the default asset link stays


def test_no_dagster_instance_leaves_lineage_in_the_audit_log_only() -> None:
    lineage = HotPathLineage(None)
    assert lineage.after_commit({}, []) is None
    assert lineage.reported == 0


def test_quotes_are_hashed_per_venue_like_the_market_prices_asset() -> None:
    from risk_monitor.defs.collection_support import collection_metadata
    from risk_monitor.domain.lineage import combined_version, venue_versions

    prices = Collected(frame=pd.DataFrame([
        {"venue": "binance", "instrument": "BTC/USDT:USDT", "last": 65000.0, "timestamp": T0},
        {"venue": "okx", "instrument": "BTC/USDT:USDT", "last": 65010.0, "timestamp": T0}]),
        sources=(
        SourceStatus(kind=SourceKind.MARKET, venue="binance", account="*", ok=True, as_of=T0,
                     rows=1),
        SourceStatus(kind=SourceKind.MARKET, venue="okx", account="*", ok=True, as_of=T0,
                     rows=1)))
    snapshot = replace(_snapshot(), prices=prices)
    recorded = evaluated_inputs(snapshot, "cfg-v1").versions["market_prices"]
    metadata = collection_metadata(prices, now=T0, age_column="timestamp")
    by_venue = metadata["data_versions_by_venue"].value
    assert by_venue == {v: seen["data_version"] for v, seen in recorded["venues"].items()}
    assert set(by_venue) == {"binance", "okx"}
    assert recorded["data_version"] == data_version_of(prices).value \
        == combined_version(venue_versions(prices))
    # an okx tick changes okx's version and the dataset's, not binance's
    moved = Collected(frame=prices.frame.assign(last=[65000.0, 65020.0]), sources=prices.sources)
    after = evaluated_inputs(replace(snapshot, prices=moved), "cfg-v1").versions["market_prices"]
    assert after["venues"]["binance"] == recorded["venues"]["binance"]
    assert after["venues"]["okx"]["data_version"] != recorded["venues"]["okx"]["data_version"]
    assert after["data_version"] != recorded["data_version"]


def test_an_evaluation_of_equal_inputs_reuses_the_digests_not_what_the_store_taught() -> None:
    from types import SimpleNamespace

    from risk_monitor.domain.audit_chain import versions_digest

    lineage = HotPathLineage(DagsterCatalog(None, "http://dagster.example"))
    first = lineage.context(SimpleNamespace(  # type: ignore[arg-type]
        snapshot=_snapshot(), config_version="cfg-v1"))
    first["lineage_digest"].stored_in.add(1)  # as if a store had confirmed the row
    again = lineage.context(SimpleNamespace(  # type: ignore[arg-type]
        snapshot=_snapshot(), config_version="cfg-v1"))  # new objects, equal content
    assert again["lineage_digest"] == first["lineage_digest"]
    assert again["dagster_data_version"] == first["dagster_data_version"]
    assert again["lineage_digest"].stored_in == set()  # a new evaluation writes its row again
    other = lineage.context(SimpleNamespace(  # type: ignore[arg-type]
        snapshot=_snapshot(), config_version="cfg-v2"))
    versions = other["lineage_digest"].versions
    assert other["lineage_digest"] == versions_digest(versions) != first["lineage_digest"]
    assert other["dagster_data_version"] == evaluation_version(versions)
