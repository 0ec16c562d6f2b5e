"""Test configuration shared by every suite.

Fixture modules live in ``risk_monitor_tests/fixtures`` (one per area) and are registered here.
With ``RISK_MONITOR_FORBID_SKIPS=1`` (set by .ci/run) any skipped test fails the session: CI must
never pass by skipping a test whose server is missing.

The suite runs on pytest-xdist workers (``-n 4 --dist loadscope`` in pyproject's addopts; ``-n 0``
runs in one process). Every worker has its own session fixtures (its database, simulators,
Redis prefix, free ports); a module's tests stay on one worker, so module-scoped stacks are
built once. Modules that share one expensive session value are scheduled together
(:data:`SHARED_SCOPES`).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any

import anyio
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


def _import_anyio_eagerly() -> None:
    """Import every anyio module now, on the main thread.

    anyio is a pytest plugin, so pytest rewrites its modules' assertions at import, which parses
    them with ``ast``; anyio imports its API lazily, so the first ``anyio.open_file`` happens in
    a server thread (starlette's FileResponse: the dashboard page). On CPython 3.11.7 two threads
    parsing at once can raise ``SystemError: AST constructor recursion depth mismatch``
    (gh-106905): the dashboard browser test once got a 500 for its page from exactly that."""
    for module in pkgutil.walk_packages(anyio.__path__, "anyio."):
        try:
            importlib.import_module(module.name)
        except ImportError:  # an optional backend (trio) that is not installed
            continue


_import_anyio_eagerly()


#: modules that read the same session-cached value: one worker runs them all, so it is built once
#: (the ``limit_breach`` scenario play, fixtures/e2e.py ``scenario_plays``)
SHARED_SCOPES = {
    "risk_monitor_tests/e2e/test_scenario_limit_breach.py": "play:limit_breach",
    "risk_monitor_tests/e2e/test_prometheus.py": "play:limit_breach",
}


#: hang guard of a test that uses a scenario play: its module's first test pays for the whole
#: play (six Dagster runs; two minutes at load ~25, five at ~32). Under the 120 s default,
#: pytest-timeout fired *inside* a Dagster step on a busy machine, and Dagster recorded it as a
#: failed step ("Execution of step 'exposures' failed"), which read like a product failure.
PLAY_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "scenario_plays" in getattr(item, "fixturenames", ()) \
                and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(PLAY_TIMEOUT_S))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with :data:`SHARED_SCOPES` as one work unit each."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SHARED_SCOPES.get(module) or super()._split_scope(nodeid)

    return SharedScopeScheduling(config, log)


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
