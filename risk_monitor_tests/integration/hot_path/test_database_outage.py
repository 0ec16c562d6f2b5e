"""The hot path without its database: it keeps evaluating and answering from live data, and the
alert it could not write goes out once the database is back (once). PostgreSQL is reached
through a TCP proxy the test cuts; the shared server is never touched."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor_tests.fixtures.hot_path import BTC, BTC_LIMIT, HotPathRig, running_rig, settle
from risk_monitor_tests.fixtures.service import TcpProxy, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def proxied(module_postgres_url: str, redis_url: str, module_redis_prefix: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HotPathRig, TcpProxy]]:
    parts = urlsplit(module_postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    url = module_postgres_url.replace(f":{parts.port}/", f":{proxy.port}/")
    try:
        with running_rig(database_url=url, redis_url=redis_url, prefix=module_redis_prefix,
                         tmp=tmp_path_factory.mktemp("hot_path_db")) as rig:
            yield rig, proxy
    finally:
        proxy.stop()


def test_live_answers_survive_a_database_outage_and_the_alert_follows_it(
        proxied: tuple[HotPathRig, TcpProxy]) -> None:
    rig, proxy = proxied
    settle(rig)
    rig.stack.player.step()  # baseline
    proxy.cut()
    try:
        rig.stack.player.step()  # WARN, while nothing can be written
        wait_until(lambda: (e := rig.limit()) is not None and e.status == pb.LIMIT_STATUS_WARN,
                   timeout=15, message="the live evaluation shows the WARN")
        small = rig.stub.CheckOrder(pb.CheckOrderRequest(
            venue="binance", account="main", instrument=BTC, side=pb.SIDE_BUY, quantity=0.01),
            timeout=5)
        assert small.allowed and small.evaluation_source == "in-memory", list(small.reasons)
        evaluations = rig.hot_path.evaluations
        wait_until(lambda: rig.hot_path.evaluations >= evaluations + 3, timeout=60,
                   message="more evaluations (and failed writes) during the outage")
        assert rig.notices() == []  # not written, so not sent: durable outbox first
    finally:
        proxy.restore()
    notice = wait_until(rig.notices, timeout=60,
                        message="the WARN notice once the database is back")
    assert [(n["kind"], n["status"]) for n in notice] == [("firing", "WARN")]
    moment = time.time() + rig.settings.service.persist_interval_s  # periodic writes since
    wait_until(lambda: time.time() > moment, timeout=60, message="a persist interval")
    evaluations = rig.hot_path.evaluations
    wait_until(lambda: rig.hot_path.evaluations >= evaluations + 2, timeout=60,
               message="evaluations after a persist interval")
    wait_until(rig.outbox_idle, timeout=60, message="outbox drained")  # retried write: no 2nd
    assert [(n["kind"], n["status"]) for n in rig.notices()] == [("firing", "WARN")]
    assert rig.notices()[0]["limit_id"] == BTC_LIMIT
