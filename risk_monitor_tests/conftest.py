"""Test configuration shared by every suite.

Fixture modules live in ``risk_monitor_tests/fixtures`` (one per area) and are registered here.
With ``RISK_MONITOR_FORBID_SKIPS=1`` (set by .ci/run) any skipped test fails the session: CI must
never pass by skipping a test whose server is missing.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "risk_monitor_tests.fixtures.services",
    "risk_monitor_tests.fixtures.custody_sims",
    "risk_monitor_tests.fixtures.storage",
    "risk_monitor_tests.fixtures.service",
    "risk_monitor_tests.fixtures.sims",
    "risk_monitor_tests.fixtures.dashboard",
    "risk_monitor_tests.fixtures.e2e",
]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("RISK_MONITOR_FORBID_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        names = ", ".join(getattr(r, "nodeid", "?") for r in skipped[:10])
        if reporter:
            reporter.write_line(
                f"RISK_MONITOR_FORBID_SKIPS=1: {len(skipped)} test(s) skipped: {names}", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
