"""The Dagster tools a data engineer already uses work from the project root: ``dg list defs``
shows every asset and check of the code location, and ``dg launch`` prints a run id that the
instance (``DAGSTER_HOME``) knows, with the run's UI URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from risk_monitor_tests.fixtures.e2e import play_environment

REPO = Path(__file__).resolve().parents[2]
DG = str(Path(sys.executable).with_name("dg"))

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def dg_command(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "COLUMNS": "200"})
    return subprocess.run([DG, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    return tmp_path


def test_dg_list_defs_lists_every_asset_and_check(dagster_home: Path) -> None:
    from risk_monitor.definitions import defs

    graph = defs().resolve_asset_graph()
    assets = {key.to_user_string() for key in graph.get_all_asset_keys()}
    checks = {key.name for key in graph.asset_check_keys}
    assert assets and checks
    done = dg_command("list", "defs", "--json", home=dagster_home)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = json.loads(done.stdout)
    listed_assets = {a["asset_key"] for a in listed.get("assets", [])}
    listed_checks = {c["name"] for c in listed.get("asset_checks", [])}
    assert assets <= listed_assets, assets - listed_assets
    assert checks <= listed_checks, checks - listed_checks
    assert "code location" not in done.stderr.lower()  # no code-location-name warnings


def test_dg_launch_prints_a_run_id_the_instance_knows(dagster_home: Path) -> None:
    done = dg_command("launch", "--assets", "market_prices", home=dagster_home)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stderr.splitlines()
              if line.startswith("{") and '"dagster_event"' in line]
    assert events, done.stderr[-3000:]
    run_ids = {e["run_id"] for e in events}
    assert len(run_ids) == 1
    run_id = run_ids.pop()
    assert any(e["dagster_event"] == "ASSET_MATERIALIZATION" for e in events)
    assert all(e["dagster_run_url"].endswith(f"/runs/{run_id}") for e in events)
    # the one BetaWarning left is Dagster's own, printed by the launching process before our
    # code loads: the instance's python_logs handler config (dagster.yaml) is beta in 1.13
    betas = [line for line in done.stderr.splitlines() if "BetaWarning" in line]
    assert all("yaml-defined logging configuration" in line for line in betas), betas
    with play_environment({"DAGSTER_HOME": str(dagster_home)}), \
            dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
