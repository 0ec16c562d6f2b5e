"""Packaging: the production wheel and image hold no simulator code; the lock matches pyproject.

The wheels are built for real with the project's own build backend (setuptools, no network,
from a copy of the sources so the work tree stays clean) and their contents inspected.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
BUILD = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"


def _build_wheel(source: Path, out: Path) -> zipfile.ZipFile:
    result = subprocess.run([sys.executable, "-c", BUILD, str(out)], cwd=source,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    name = result.stdout.strip().splitlines()[-1]
    return zipfile.ZipFile(out / name)


def _copy_sources(target: Path, *names: str) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.pyc")
    for name in names:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=ignore)
        else:
            shutil.copy2(path, target / name)
    return target


@pytest.fixture(scope="module")
def production_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # Everything a checkout holds that the build could pick up, simulators included.
    source = _copy_sources(tmp_path_factory.mktemp("src"), "pyproject.toml", "README.md",
                           "risk_monitor", "risk_sim")
    return _build_wheel(source, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def simulator_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    source = _copy_sources(tmp_path_factory.mktemp("src"), "risk_sim")
    return _build_wheel(source / "risk_sim", tmp_path_factory.mktemp("dist"))


def _metadata(wheel: zipfile.ZipFile, suffix: str) -> str:
    name = next(n for n in wheel.namelist() if n.endswith(f".dist-info/{suffix}"))
    return wheel.read(name).decode()


def test_production_wheel_holds_no_simulator_code(production_wheel: zipfile.ZipFile) -> None:
    names = production_wheel.namelist()
    assert "risk_monitor/definitions.py" in names
    assert "risk_monitor/config/limits.yaml" in names
    assert "risk_monitor/py.typed" in names
    top_level = {n.split("/", 1)[0] for n in names}
    assert top_level == {"risk_monitor", "risk_monitor-0.1.0.dist-info"}, top_level
    assert not [n for n in names if "risk_sim" in n or "risk_monitor_tests" in n]
    for name in names:
        if name.endswith(".py"):
            text = production_wheel.read(name).decode()
            assert "import risk_sim" not in text and "from risk_sim" not in text, name
    entry_points = _metadata(production_wheel, "entry_points.txt")
    assert "risk-monitor = risk_monitor.cli:main" in entry_points
    assert "risk-sim" not in entry_points and "risk_sim" not in entry_points


def test_production_wheel_needs_no_simulator_to_install(production_wheel: zipfile.ZipFile) -> None:
    metadata = _metadata(production_wheel, "METADATA")
    requirements = [Requirement(line.split(":", 1)[1].strip())
                    for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    always = {r.name for r in requirements if r.marker is None}
    dev = {r.name for r in requirements if r.marker and "dev" in str(r.marker)}
    assert "dagster" in always
    assert "risk-monitor-sim" not in always, "the production install must not pull simulators"
    assert {"risk-monitor-sim", "dagster-dg-cli"} <= dev
    # a published wheel carries no direct (file://) references
    assert all(r.url is None for r in requirements)


def test_simulators_are_their_own_distribution(simulator_wheel: zipfile.ZipFile) -> None:
    names = simulator_wheel.namelist()
    for module in ("risk_sim/cli.py", "risk_sim/demo.py", "risk_sim/exchange/binance.py",
                   "risk_sim/scenarios/limit_breach.yaml"):
        assert module in names
    assert not [n for n in names if n.startswith("risk_monitor/") or n.endswith("pyproject.toml")]
    assert "risk-sim = risk_sim.cli:main" in _metadata(simulator_wheel, "entry_points.txt")
    assert "Requires-Dist: risk-monitor" in _metadata(simulator_wheel, "METADATA")


def test_lock_matches_pyproject() -> None:
    """uv.lock was made from the current pyproject (run `uv lock` after editing dependencies)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert set(lock["manifest"]["members"]) == {"risk-monitor", "risk-monitor-sim"}
    package = next(p for p in lock["package"] if p["name"] == "risk-monitor")
    locked = {(r["name"], r.get("specifier", ""), r.get("marker", ""))
              for r in package["metadata"]["requires-dist"]}
    declared: set[tuple[str, str, str]] = set()
    for extra, items in [("", pyproject["dependencies"]),
                         *pyproject["optional-dependencies"].items()]:
        for item in items:
            requirement = Requirement(item)
            declared.add((requirement.name.lower().replace("_", "-"),
                          str(requirement.specifier) and ",".join(
                              sorted(str(s) for s in requirement.specifier)),
                          f"extra == '{extra}'" if extra else ""))
    normalised = {(name, ",".join(sorted(spec.split(","))) if spec else "", marker)
                  for name, spec, marker in locked}
    assert normalised == declared, sorted(normalised ^ declared)
    versions = {p["name"]: p["version"] for p in lock["package"]}
    assert versions["pandas"].startswith("2."), "dagster-pandera needs pandas < 3"


def test_image_holds_no_simulator_code_and_installs_from_the_lock() -> None:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    copies = [i["value"] for i in parser.structure if i["instruction"] == "COPY"]
    for value in copies:
        sources = [s for s in value.split() if not s.startswith("--")][:-1]
        for source in sources:
            assert not source.startswith("risk_sim") or source == "risk_sim/pyproject.toml", value
    runs = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    assert "uv sync" in runs and "--frozen" in runs and "--no-dev" in runs
    assert "--extra" not in runs and "--all-extras" not in runs and "--all-packages" not in runs
    assert "rm -rf /app/risk_sim" in runs, "the member's manifest leaves the build stage"
    assert any("uv.lock" in value for value in copies)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "risk_sim" in ignored and "!risk_sim/pyproject.toml" in ignored
