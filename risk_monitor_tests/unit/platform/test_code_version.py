"""The code version is the git commit, a build stamp, or a content hash: never the package version."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from risk_monitor import __version__
from risk_monitor.platform import code_version as cv


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cv.code_version.cache_clear()
    yield
    cv.code_version.cache_clear()


def test_the_environment_stamp_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cv.ENV_VAR, "0123abcd")
    assert cv.code_version() == "git:0123abcd"
    cv.code_version.cache_clear()
    monkeypatch.setenv(cv.ENV_VAR, "src:feedbeef")
    assert cv.code_version() == "src:feedbeef"


def test_a_checkout_reports_its_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cv.ENV_VAR, raising=False)
    head = subprocess.run(["git", "-C", str(cv.PACKAGE_DIR), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    version = cv.code_version()
    assert version.startswith(f"git:{head}")
    assert version != __version__


def test_without_git_the_source_hash_follows_the_content(tmp_path: Path) -> None:
    assert cv._git_version(tmp_path) is None  # not a repository: no commit to name
    module = tmp_path / "rules.py"
    module.write_text("LIMIT = 1\n")
    before = cv.source_hash([module], root=tmp_path)
    assert before == cv.source_hash([module], root=tmp_path)
    module.write_text("LIMIT = 2\n")
    assert cv.source_hash([module], root=tmp_path) != before


def test_asset_code_versions_differ_per_module_and_are_not_the_release() -> None:
    import risk_monitor.defs.alerts.assets as alerts
    import risk_monitor.defs.compliance.assets as compliance
    from risk_monitor.defs import metadata

    ours = metadata.asset_code_version(alerts.__name__)
    assert ours == alerts.CODE_VERSION
    assert ours != metadata.asset_code_version(compliance.__name__)
    assert len(ours) == 12 and ours != __version__
