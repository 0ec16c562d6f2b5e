"""The ``reconciliation_breaks`` asset in a real Dagster materialisation: the desk's book read
from Redis, the exchanges' and custodian's books from the collection assets, breaks raised as
``reconciliation`` alerts in the real PostgreSQL store, the asset check failing on a fill the
desk did not book and passing once the books agree (the alert resolves)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import redis
import yaml

from risk_monitor.adapters.sql import Storage
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.risk.resources import RiskStoreResource
from risk_monitor.defs.trading.assets import reconciliation_breaks
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    Collected,
    SourceKind,
    alert_fingerprint,
)
from risk_monitor_tests.unit.domain.builders import balance, frame, position, source

BTC = "BTC/USDT:USDT"


def book_fill(client: redis.Redis, venue: str, instrument: str, quantity: float, *,
              key: str) -> None:
    """What the desk's trading client does on each of its fills (adapters/redis_desk_book.py)."""
    client.hincrbyfloat(key, f"{venue}|position|{instrument}", quantity)


def collected(exchange_qty: float, *, okx_ok: bool = True) -> dict[str, Collected]:
    sources = (source(SourceKind.EXCHANGE, "binance"),
               source(SourceKind.EXCHANGE, "okx", ok=okx_ok))
    positions = [position("binance", BTC, exchange_qty, 60000, 61000)]
    if okx_ok:
        positions.append(position("okx", BTC, -1, 60000, 61000))
    custody = (source(SourceKind.CUSTODIAN, "fireblocks", "vault-1"),)
    return {
        "exchange_positions": Collected(frame(positions, POSITION_COLUMNS), sources),
        "exchange_balances": Collected(frame([balance("binance", "USDT", 1e6)],
                                             BALANCE_COLUMNS), sources),
        "custodian_balances": Collected(frame([balance("fireblocks", "BTC", 5,
                                                       account="vault-1",
                                                       source_type="custodian")],
                                              BALANCE_COLUMNS), custody),
    }


def upstream(values: dict[str, Collected]) -> list[dg.AssetsDefinition]:
    def make(name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name)
        def read() -> Collected:
            return values[name]
        return read
    return [make(n) for n in values]


@pytest.fixture
def desk_key(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url)
    key = f"rm:test:desk:{uuid.uuid4().hex}"
    yield client, key
    client.delete(key, f"{key}:updated_at")
    client.close()


@pytest.fixture
def config(tmp_path: Path, migrated_postgres_url: str, redis_url: str,
           desk_key: tuple[redis.Redis, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("RISK_MONITOR_CONFIG", "RISK_MONITOR_DATABASE_URL", "RISK_MONITOR_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "risk-monitor.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "state"), "database_url": migrated_postgres_url,
        "redis_url": redis_url,
        "venues": [{"id": "binance", "exchange": "binanceusdm"},
                   {"id": "okx", "exchange": "okx"}],
        "custodians": [{"id": "fireblocks"}],
        # resolved at once when the books agree again (the default keep_firing_for_s holds it)
        "alerts": {"file_sink_path": str(tmp_path / "alerts.jsonl"), "keep_firing_for_s": 0},
        "trading": {"desk_book_key": desk_key[1], "reconciliation_abs_tolerance": 0.001,
                    "reconciliation_for_s": 0}}))  # each run pages at once here
    return path


def run(config: Path, values: dict[str, Collected]) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*upstream(values), reconciliation_breaks],
        resources={"settings": SettingsResource(config_file=str(config)),
                   "risk_store": RiskStoreResource()},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)


def check_of(result: dg.ExecuteInProcessResult) -> Any:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_an_unbooked_fill_breaks_the_books_raises_an_alert_and_resolves(
        config: Path, desk_key: tuple[redis.Redis, str], pg_storage: Storage) -> None:
    client, key = desk_key
    first = run(config, collected(2.0))
    assert not check_of(first).passed  # no desk book published yet: said, not assumed fine
    assert check_of(first).description.startswith("no desk book published")

    book_fill(client, "binance", BTC, 1.5, key=key)  # the desk booked 1.5 of the 2.0 filled
    book_fill(client, "binance", BTC, 0.5, key=key)
    book_fill(client, "okx", BTC, -1.0, key=key)
    agreed = run(config, collected(2.0))
    assert check_of(agreed).passed
    assert pg_storage.outbox.rows() == []  # nothing broken, nothing notified

    broken = run(config, collected(2.3))  # a 0.3 fill the desk never booked
    evaluation = check_of(broken)
    assert not evaluation.passed
    (found,) = evaluation.metadata["breaks"].value
    assert (found["venue"], found["item"], found["status"]) == ("binance", BTC, "BREAK")
    assert found["difference"] == pytest.approx(-0.3)
    table = broken.output_for_node("reconciliation_breaks")
    assert table.iloc[0]["status"] == "BREAK"
    (firing,) = pg_storage.outbox.rows()
    series = alert_fingerprint("reconciliation", f"venue:binance|instrument:{BTC}")
    assert (firing.fingerprint, firing.alert_status, firing.kind) == (series, "BREACH",
                                                                      "firing")

    book_fill(client, "binance", BTC, 0.3, key=key)  # the desk books the missing fill
    run(config, collected(2.3))
    statuses = [(r.fingerprint, r.alert_status, r.kind) for r in pg_storage.outbox.rows()]
    assert statuses == [(series, "BREACH", "firing"), (series, "OK", "resolved")]


def test_a_blind_venue_is_unknown_not_agreed(config: Path,
                                             desk_key: tuple[redis.Redis, str]) -> None:
    client, key = desk_key
    book_fill(client, "binance", BTC, 2.0, key=key)
    book_fill(client, "okx", BTC, -1.0, key=key)
    evaluation = check_of(run(config, collected(2.0, okx_ok=False)))
    assert not evaluation.passed
    assert [(b["venue"], b["status"]) for b in evaluation.metadata["breaks"].value] == [
        ("okx", "UNKNOWN")]
