"""What a Dagster run pays once, not per step: the settings, and the garbage collector's walks
over the objects of the imports (bench/bench_risk_cycle_run.py measures the effect)."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from risk_monitor.defs.resources import SettingsResource

ROOT = Path(__file__).resolve().parents[2]


def test_settings_are_read_once_per_run(tmp_path: Path) -> None:
    config = tmp_path / "risk-monitor.yaml"
    config.write_text(yaml.safe_dump({"environment": "first"}))
    resource = SettingsResource(config_file=str(config))
    context = dg.build_init_resource_context()

    resource.setup_for_execution(context)
    first = resource.load()
    config.write_text(yaml.safe_dump({"environment": "second"}))
    assert resource.load() is first  # one configuration from the first step to the last
    resource.teardown_after_execution(context)

    resource.setup_for_execution(context)  # the next run reads the file again
    assert resource.load().environment == "second"
    resource.teardown_after_execution(context)


def test_loading_the_definitions_freezes_the_objects_of_the_imports() -> None:
    script = ("import gc\nfrom risk_monitor.definitions import defs\n"
              "before = gc.get_freeze_count()\ndefs(); defs()\n"
              "print(before, gc.get_freeze_count())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=120)
    before, after = (int(n) for n in done.stdout.split()[-2:])
    assert before == 0
    assert after > 100_000  # Dagster, pandas, SQLAlchemy and the definitions themselves


def test_the_collector_is_back_on_after_the_walk_and_httpx_stays_unloaded() -> None:
    """The walk runs with the collector off (imports only); the process keeps collecting after
    it. The configuration service's HTTP client loads only where that service is called."""
    script = ("import gc, sys\nfrom risk_monitor.definitions import defs\ndefs()\n"
              "print(gc.isenabled(), 'httpx' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=120)
    assert done.stdout.split()[-2:] == ["True", "False"]
