"""``risk_cycle`` on a real distributed engine: Dagster's Celery executor, Redis as broker and
result backend, two Celery workers started here (``dagster-celery worker start``).

Configuration only selects the engine (``RISK_MONITOR_DAGSTER_EXECUTOR=celery``, the broker
URLs and a private Redis key prefix): the job, assets and IO manager are the production ones.
Each step runs in a worker process, and the steps hand their values to each other through the
risk store on PostgreSQL, not through a disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis
import sqlalchemy as sa
import yaml

from risk_monitor.adapters.sql import create_engine
from risk_monitor.adapters.sql.asset_values import asset_values
from risk_monitor_tests.fixtures.e2e import (
    PLAY_COMPONENTS,
    POSTGRES_DAGSTER_YAML,
    _test_settings,
    play_environment,
)
from risk_monitor_tests.fixtures.service import wait_until
from risk_sim.launcher import SimulatorStack, read_env_file

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
WORKER_YAML = ROOT / "deploy" / "celery" / "worker.yaml"
READY_S = 240.0  # a worker imports dagster + celery twice (CLI, worker); slow on a loaded machine
STOP_S = 20.0


def risk_cycle_job() -> dg.JobDefinition:
    """The production ``risk_cycle`` as the code location builds it (a reconstructable target:
    the workers rebuild it from this function's module)."""
    from risk_monitor.definitions import defs

    return defs().resolve_job_def("risk_cycle")


@contextlib.contextmanager
def _workers(names: list[str], env: dict[str, str], config_yaml: Path,
             logs: Path) -> Iterator[list[Path]]:
    """Start one ``dagster-celery worker`` per name (own process group); stop them all."""
    procs: list[subprocess.Popen[bytes]] = []
    log_paths: list[Path] = []
    try:
        # one after the other: the first creates the Dagster schema in the fresh database, and
        # two workers creating it at once fail (DuplicateObject: type "jobs" already exists)
        for name in names:
            log_path = logs / f"{name}.log"
            log_paths.append(log_path)
            with log_path.open("wb") as sink:
                proc = subprocess.Popen(
                    [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                     "-y", str(config_yaml), "-n", name, "--", "--concurrency=1",
                     "--without-gossip", "--without-mingle", "--without-heartbeat"],
                    cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                    start_new_session=True)
            procs.append(proc)

            def ready_or_gone(proc: subprocess.Popen[bytes] = proc, path: Path = log_path
                              ) -> bool:
                # an exit ends the wait (wait_until reads a raised error as "not yet")
                return proc.poll() is not None or " ready." in path.read_text(errors="replace")
            wait_until(ready_or_gone, timeout=READY_S, interval=0.2,
                       message=f"celery worker {name} to be ready")
            assert proc.poll() is None, f"worker exited early:\n{log_path.read_text()[-3000:]}"
        yield log_paths
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_S)


@pytest.fixture
def celery_prefix(redis_url: str) -> Iterator[str]:
    """A private Redis key prefix for the broker and result backend, deleted afterwards."""
    prefix = f"rmtest-celery-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_risk_cycle_runs_on_celery_workers(tmp_path: Path, fresh_postgres_url: str,
                                           redis_url: str, celery_prefix: str) -> None:
    stack = SimulatorStack("limit_breach", clock="manual", components=PLAY_COMPONENTS,
                           control=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(POSTGRES_DAGSTER_YAML.read_text())
    names = [f"rm-w1-{uuid.uuid4().hex[:6]}", f"rm-w2-{uuid.uuid4().hex[:6]}"]
    try:
        stack.start()
        paths = stack.write_config(tmp_path / "sim")
        settings_path = tmp_path / "risk-monitor.yaml"
        settings_path.write_text(yaml.safe_dump(
            _test_settings(yaml.safe_load(paths["settings"].read_text()), tmp_path)))
        env = {
            **read_env_file(paths["env"]),
            "RISK_MONITOR_CONFIG": str(settings_path),
            "RISK_MONITOR_DATABASE_URL": fresh_postgres_url,
            "RISK_MONITOR_DAGSTER_PG_URL": fresh_postgres_url,
            "DAGSTER_HOME": str(home),
            "RISK_MONITOR_DAGSTER_EXECUTOR": "celery",
            "RISK_MONITOR_CELERY_BROKER": redis_url,
            "RISK_MONITOR_CELERY_BACKEND": redis_url,
            "RISK_MONITOR_CELERY_KEY_PREFIX": celery_prefix,
        }
        # the workers' config: the shipped deploy/celery/worker.yaml plus our private prefix
        worker_doc = yaml.safe_load(WORKER_YAML.read_text())
        worker_doc["execution"]["config"]["config_source"] = {
            "broker_transport_options": {"global_keyprefix": celery_prefix},
            "result_backend_transport_options": {"global_keyprefix": celery_prefix},
        }
        worker_yaml = tmp_path / "celery-worker.yaml"
        worker_yaml.write_text(yaml.safe_dump(worker_doc))
        with play_environment(env):
            worker_env = {**os.environ, "PYTHONPATH": str(ROOT)}
            with _workers(names, worker_env, worker_yaml, tmp_path) as logs, \
                    dg.DagsterInstance.get() as instance:
                job = dg.reconstructable(risk_cycle_job)
                with dg.execute_job(job, instance=instance, raise_on_error=False,
                                    tags={"risk_monitor/trigger": "celery-test"}) as result:
                    failures = [str(e.message) for e in result.all_events if e.is_failure]
                    assert result.success, (failures, [p.read_text()[-2000:] for p in logs])
                    run_id = result.run_id
                    steps = {e.step_key for e in result.all_events
                             if e.event_type_value == "STEP_SUCCESS"}

                records = instance.all_logs(run_id)
                delegated = {}
                for record in records:
                    event = record.dagster_event
                    if event is None or event.event_type_value != "ENGINE_EVENT":
                        continue
                    if "in celery worker" not in (event.message or ""):
                        continue
                    metadata = {k: v.value for k, v in event.engine_event_data.metadata.items()}
                    delegated[event.step_key] = str(metadata["Celery worker"])
                worker_hosts = {name.split("@")[0] for name in delegated.values()}
                limit_status = instance.get_latest_materialization_event(
                    dg.AssetKey("limit_status"))
    finally:
        stack.stop()

    # every step of the run was executed by one of the two workers started here
    assert {"market_prices", "exchange_positions", "portfolio_pnl", "limit_status",
            "risk_alerts", "compliance_status"} <= steps
    assert steps <= set(delegated), sorted(steps - set(delegated))
    assert worker_hosts <= set(names) and worker_hosts, (worker_hosts, names)
    # ... and the workers say so themselves: one finished Celery task per step at least
    succeeded = sum(len(re.findall(r"Task execute_plan\[[0-9a-f-]+\] succeeded", p.read_text(
        errors="replace"))) for p in logs)
    assert succeeded >= len(steps), (succeeded, sorted(steps))
    assert limit_status is not None and limit_status.run_id == run_id
    # the steps exchanged their values through the risk store, not a local disk
    engine = create_engine(fresh_postgres_url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(sa.select(asset_values.c.asset_key).where(
                asset_values.c.run_id == run_id)).scalars())
    finally:
        engine.dispose()
    assert {"market_prices", "portfolio_pnl", "limit_status"} <= stored
    assert not (home / "storage").exists() or not any((home / "storage").rglob("*limit_status*"))
