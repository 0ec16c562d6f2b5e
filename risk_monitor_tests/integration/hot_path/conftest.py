"""One simulated desk (scenario ``limit_breach``) and one running service per test module.

The service, its database and its Redis keys are shared by a module's tests; each test starts
from :func:`settle` (scenario back to its start, the service back to OK, Slack emptied).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from risk_monitor_tests.fixtures.hot_path import HotPathRig, running_rig, settle


@pytest.fixture(scope="module")
def rig(redis_url: str, module_postgres_url: str, module_redis_prefix: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[HotPathRig]:
    with running_rig(database_url=module_postgres_url, redis_url=redis_url,
                     prefix=module_redis_prefix,
                     tmp=tmp_path_factory.mktemp("hot_path")) as running:
        yield running


@pytest.fixture
def desk(rig: HotPathRig) -> HotPathRig:
    """The module's rig, settled: scenario at its start, service OK, Slack empty."""
    settle(rig)
    return rig
