"""kill -9 of a real dispatcher process after Slack accepted a post but before the outbox
recorded it: the next dispatcher adopts the earlier post (Slack message metadata) instead of
posting again, and delivers within the lease plus 5 s (the outbox's own timestamps).

The Slack simulator records the post and withholds its answer (``hang_after_accept``), so the
kill lands exactly in the window that used to give a duplicate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.schema import outbox
from risk_monitor.bootstrap import outbox_dispatcher
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result
from risk_monitor_tests.fixtures.waiting import wait_until
from risk_sim.slack import SlackSimulator

TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"
LEASE_S = 5.0
DISPATCH_ONCE = """
from risk_monitor.bootstrap import build_runtime

build_runtime(migrate=False).dispatcher().dispatch_once(50)
"""


def _key(message: dict[str, object]) -> str:
    metadata = message["metadata"]
    assert isinstance(metadata, dict)
    return str(metadata["event_payload"]["idempotency_key"])


def test_kill_9_after_slack_accepted_gives_exactly_one_post_per_alert(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    storage = pg_storage
    for scope in ("venue:a", "venue:b"):
        evaluate(storage, make_result("BREACH", clock(), scope=scope))
    url = storage.engine.url.render_as_string(hide_password=False)
    env = {**os.environ, TOKEN_ENV: slack_sim.token,
           "RISK_MONITOR_DATABASE_URL": url,
           "RISK_MONITOR_DATA_DIR": str(tmp_path / "state"),
           "RISK_MONITOR_SLACK__TOKEN_ENV": TOKEN_ENV,
           "RISK_MONITOR_SLACK__BASE_URL": slack_sim.api_base,
           "RISK_MONITOR_SLACK__TIMEOUT_S": "60",  # the answer never comes: we kill first
           "RISK_MONITOR_SLACK__MAX_CONCURRENCY": "1",
           "RISK_MONITOR_ALERTS__OUTBOX_LEASE_S": str(LEASE_S)}
    env.pop("RISK_MONITOR_CONFIG", None)
    slack_sim.hang_after_accept(count=1, seconds=120)
    with (tmp_path / "dispatcher.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", DISPATCH_ONCE], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            (accepted,) = slack_sim.wait_for_messages(1, timeout=120)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    rows = storage.outbox.rows()
    assert {r.status for r in rows} == {"sending"}  # claimed by the dead process
    with storage.engine.connect() as conn:
        leases = dict(conn.execute(sa.select(outbox.c.idempotency_key, outbox.c.lease_until)).all())
    assert storage.outbox.counts()["sent"] == 0

    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(
        data_dir=tmp_path / "state",
        slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base, "timeout_s": 5},
        alerts={"outbox_lease_s": LEASE_S})
    dispatcher = outbox_dispatcher(settings, storage)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop, 0.1), daemon=True)
    thread.start()
    try:
        # the deadline guards against a hang; how fast adoption happens is not asserted here
        wait_until(lambda: storage.outbox.counts()["sent"] == len(rows), timeout=LEASE_S + 60,
                   interval=0.1, message=f"all {len(rows)} alerts delivered after the lease")
    finally:
        stop.set()
        dispatcher.wake()
        thread.join(30)
    assert storage.outbox.counts()["sent"] == len(rows), storage.outbox.rows()
    keys = sorted(_key(m) for m in slack_sim.messages)
    assert keys == sorted(r.idempotency_key for r in rows)  # one post each: none twice
    adopted = next(r for r in storage.outbox.rows() if r.idempotency_key == _key(accepted))
    assert adopted.delivery_ref == f"{accepted['channel']}:{accepted['ts']}"
    assert adopted.attempts == 2
    # the deadline: delivered after the dead claim's lease ended (never re-posted
    # during it) and within lease + 5 s; timestamps are the outbox's own records
    with storage.engine.connect() as conn:
        finished = dict(conn.execute(sa.select(outbox.c.idempotency_key,
                                               outbox.c.finished_at)).all())
    for key, lease_until in leases.items():
        assert lease_until is not None
        assert lease_until <= finished[key] <= lease_until + timedelta(seconds=5), key
