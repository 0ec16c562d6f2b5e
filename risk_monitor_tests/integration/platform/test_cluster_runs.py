"""Runs are self-contained and survive a blip.

- Asset values travel through the risk store (``RiskStoreIOManager``), on PostgreSQL and on
  the embedded SQLite default: a later run in a fresh instance process loads the value of the
  latest materialisation with nothing on the local disk; nothing stored is a typed failure.
- Step retry policies retry what our errors call retryable and nothing else: a store step whose
  first attempt meets a real connection failure (psycopg2, through the error mapper) succeeds
  on its retry; a configuration error fails at once, after one attempt.
"""

import socket
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg2
import pytest
import sqlalchemy as sa

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.asset_values import asset_values
from risk_monitor.bootstrap import build_runtime
from risk_monitor.defs.io_manager import RiskStoreIOManager
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.risk.assets import limit_config
from risk_monitor.defs.risk.resources import RiskStoreResource
from risk_monitor.platform.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Settings whose risk store is a fresh PostgreSQL database or the SQLite default."""
    monkeypatch.delenv("RISK_MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("RISK_MONITOR_DATA_DIR", str(tmp_path / "state"))
    if request.param == "postgresql":
        url = request.getfixturevalue("fresh_postgres_url")
        monkeypatch.setenv("RISK_MONITOR_DATABASE_URL", url)
    else:
        monkeypatch.delenv("RISK_MONITOR_DATABASE_URL", raising=False)
    yield request.param


@pytest.fixture
def instance_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


@dg.asset
def desk_quotes(context: dg.AssetExecutionContext) -> pd.DataFrame:
    price = float(context.run.tags.get("price", "1"))
    return pd.DataFrame({"instrument": ["BTC/USDT:USDT"], "last": [price]})


@dg.asset
def desk_marks(desk_quotes: pd.DataFrame) -> float:
    return float(desk_quotes["last"].iloc[0])


def _local_values(home: Path) -> list[Path]:
    """Files Dagster's default IO manager would have written (``storage/<asset key>``);
    compute logs (``<run>/compute_logs``) are the log manager's, not values."""
    storage = home / "storage"
    return [p for p in storage.rglob("*") if p.is_file() and "compute_logs" not in p.parts
            ] if storage.exists() else []


def test_a_later_run_loads_the_latest_value_from_the_store(store_env: str,
                                                           instance_home: Path) -> None:
    io_manager = RiskStoreIOManager(keep_per_asset=2)
    with dg.DagsterInstance.from_config(str(instance_home)) as instance:
        first = dg.materialize([desk_quotes], instance=instance, tags={"price": "60000"},
                               resources={"io_manager": io_manager})
        second = dg.materialize([desk_quotes], instance=instance, tags={"price": "61000"},
                                resources={"io_manager": io_manager})
        assert first.success and second.success

    # a new instance object, as a fresh run pod or worker would build it
    with dg.DagsterInstance.from_config(str(instance_home)) as instance:
        later = dg.materialize([desk_quotes, desk_marks], selection=[desk_marks],
                               instance=instance, resources={"io_manager": io_manager})
        assert later.success
        assert later.output_for_node("desk_marks") == 61000.0  # the latest, not the first
        third = dg.materialize([desk_quotes], instance=instance, tags={"price": "62000"},
                               resources={"io_manager": io_manager})
        assert third.success

    assert _local_values(instance_home) == []
    runtime = build_runtime()
    newest_first = (sa.select(asset_values.c.run_id).where(asset_values.c.asset_key ==
                    "desk_quotes").order_by(asset_values.c.stored_at.desc()))
    with runtime.storage.engine.connect() as conn:
        kept = list(conn.execute(newest_first).scalars())
    runtime.close()
    assert kept == [third.run_id, second.run_id]  # newest first, keep_per_asset=2


def test_nothing_stored_is_a_typed_failure_not_a_default(store_env: str,
                                                         instance_home: Path) -> None:
    with dg.DagsterInstance.from_config(str(instance_home)) as instance:
        result = dg.materialize([desk_quotes, desk_marks], selection=[desk_marks],
                                instance=instance, raise_on_error=False,
                                resources={"io_manager": RiskStoreIOManager()})
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data is not None, failure.error
    metadata = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert metadata["error_code"] == "RM302"
    assert metadata["retryable"] is False


# -- retries --------------------------------------------------------------------------------------
def _refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BlippingRiskStore(RiskStoreResource):
    """The real store, except that the first ``blips`` calls meet a refused PostgreSQL
    connection (a real psycopg2 error, mapped by the production error mapper)."""

    blips: int = 1
    marker: str

    def storage(self, settings: Settings) -> Storage:
        counter = Path(self.marker)
        calls = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(calls + 1))
        if calls < self.blips:
            psycopg2.connect(host="127.0.0.1", port=_refused_port(), dbname="risk",
                             connect_timeout=5)
        return super().storage(settings)


class MisconfiguredRiskStore(RiskStoreResource):
    """A store whose URL names a backend we do not ship (a configuration error)."""

    marker: str

    def storage(self, settings: Settings) -> Storage:
        counter = Path(self.marker)
        counter.write_text(str(int(counter.read_text() or "0") + 1 if counter.exists() else 1))
        return Storage.open("mysql://risk@127.0.0.1/risk")


def _attempts(result: dg.ExecuteInProcessResult, step: str) -> list[str]:
    wanted = {"STEP_START", "STEP_RESTARTED", "STEP_UP_FOR_RETRY", "STEP_FAILURE",
              "STEP_SUCCESS"}
    return [e.event_type_value for e in result.all_events
            if e.step_key == step and e.event_type_value in wanted]


def test_a_store_blip_is_retried_and_the_run_succeeds(store_env: str, tmp_path: Path) -> None:
    marker = tmp_path / "calls"
    result = dg.materialize(
        [limit_config], raise_on_error=False,
        resources={"settings": SettingsResource(), "io_manager": RiskStoreIOManager(),
                   "risk_store": BlippingRiskStore(marker=str(marker))})

    assert result.success, [str(e.message) for e in result.all_events if e.is_failure]
    assert _attempts(result, "limit_config") == [
        "STEP_START", "STEP_UP_FOR_RETRY", "STEP_RESTARTED", "STEP_SUCCESS"]
    assert marker.read_text() == "2"
    retry = next(e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")
    assert "RM501" in str(retry.event_specific_data)  # StorageUnavailableError, retryable


def test_a_non_retryable_error_fails_at_once(store_env: str, tmp_path: Path) -> None:
    marker = tmp_path / "calls"
    result = dg.materialize(
        [limit_config], raise_on_error=False,
        resources={"settings": SettingsResource(), "io_manager": RiskStoreIOManager(),
                   "risk_store": MisconfiguredRiskStore(marker=str(marker))})

    assert not result.success
    assert _attempts(result, "limit_config") == ["STEP_START", "STEP_FAILURE"]
    assert marker.read_text() == "1"
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data is not None, failure.error
    metadata = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert metadata["error_code"] == "RM100" and metadata["retryable"] is False
