"""The defs folder merged module by module (risk_monitor/definitions.py) is what Dagster's own
``dg.load_from_defs_folder`` builds from the same folder: same asset specs, checks, jobs,
sensors, schedules and resources. And the folder holds nothing only the component tree reads."""

from pathlib import Path

import dagster as dg

from risk_monitor import definitions

DEFS = Path(definitions.__file__).parent / "defs"
#: files only Dagster's component tree understands (YAML components, component loaders)
COMPONENT_FILES = ("defs.yaml", "component.yaml", "component.py", "definitions.py")


def _summary(defs: dg.Definitions) -> dict[str, object]:
    repository = defs.get_repository_def()
    specs = {key.to_user_string(): assets.specs_by_key[key]
             for assets in repository.assets_defs_by_key.values() for key in assets.keys}
    checks = sorted(key.to_user_string() for key in repository.asset_graph.asset_check_keys)
    return {
        "specs": specs,
        "checks": checks,
        "jobs": sorted(job.name for job in repository.get_all_jobs()),
        "sensors": sorted(sensor.name for sensor in repository.sensor_defs),
        "schedules": sorted(schedule.name for schedule in repository.schedule_defs),
        "resources": sorted(defs.resources or {}),
    }


def test_the_walk_builds_what_dagsters_defs_folder_loader_builds() -> None:
    ours = _summary(definitions._walk_defs_folder())
    dagsters = _summary(dg.load_from_defs_folder(path_within_project=DEFS))
    assert ours == dagsters
    assert "risk_cycle" in ours["jobs"] and ours["checks"]


def test_the_defs_folder_holds_no_component_files() -> None:
    found = [str(p.relative_to(DEFS)) for name in COMPONENT_FILES for p in DEFS.rglob(name)]
    assert found == [], f"{found}: load the folder with dg.load_from_defs_folder again"
