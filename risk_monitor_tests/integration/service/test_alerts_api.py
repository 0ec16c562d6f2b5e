"""REST acknowledge / silence routes: the service's real app and bearer-token middleware on the
real PostgreSQL store; the dispatcher then holds back what they cover (Slack simulator)."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.platform.settings import load_settings
from risk_monitor.service.health import Readiness
from risk_monitor.service.rest import build_app
from risk_monitor.service.security import Authenticator, ServiceSecurity
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result
from risk_sim.slack import SlackSimulator

OPS_TOKEN = "ops-token-" + "x" * 32
SLACK_TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"


@pytest.fixture
def app(pg_storage: Storage) -> Starlette:
    security = dataclasses.replace(ServiceSecurity.open(),
                                   authenticator=Authenticator({"RISK_OPS_TOKEN": OPS_TOKEN}))
    return build_app(Readiness({}), DatabaseRiskView(pg_storage.engine),
                     identity={"service": "t", "instance_id": "i"}, security=security)


async def call(app: Starlette, method: str, path: str, *, token: str | None = OPS_TOKEN,
               body: Any = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rm") as client:
        return await client.request(method, path, headers=headers, json=body)


async def test_routes_need_a_token(app: Starlette) -> None:
    for method, path in [("GET", "/v1/alerts/controls"), ("POST", "/v1/alerts/ack"),
                         ("POST", "/v1/alerts/silences"),
                         ("DELETE", "/v1/alerts/silences/x")]:
        answer = await call(app, method, path, token=None, body={})
        assert answer.status_code == 401, path
        assert answer.json()["error"]["code"] == "unauthenticated"


async def test_silence_and_ack_over_rest_hold_notifications_keep_records_and_audit(
        app: Starlette, pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SLACK_TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": SLACK_TOKEN_ENV,
                                    "base_url": slack_sim.api_base, "timeout_s": 2})
    dispatcher = OutboxDispatcher(pg_storage.engine, SlackNotifier.from_settings(settings),
                                  notifier_name="slack")  # real clock: the silence starts now

    made = await call(app, "POST", "/v1/alerts/silences", body={
        "matchers": ["venue=okx"], "duration_s": 3600, "comment": "okx maintenance",
        "author": "someone-else"})  # a claimed author is ignored: the token names the caller
    assert made.status_code == 201, made.text
    silence = made.json()
    assert silence["created_by"] == "RISK_OPS_TOKEN" and silence["active"]

    evaluate(pg_storage, make_result("BREACH", clock.advance(1), scope="venue:okx"))
    (firing,) = evaluate(pg_storage, make_result("WARN", clock.advance(1),
                                                 scope="venue:binance"))
    result = dispatcher.dispatch_once(10)
    assert (result.sent, result.suppressed) == (1, 1)
    # the dashboard shows the held row and what held it
    feed = (await call(app, "GET", "/v1/dashboard/state")).json()["alerts"]
    assert feed["suppressed"] == 1
    (held,) = [i for i in feed["items"] if i["delivery"] == "suppressed"]
    assert held["scope"] == "venue:okx" and held["held_by"] == f"silence:{silence['silence_id']}"

    acked = await call(app, "POST", "/v1/alerts/ack",
                       body={"key": firing.fingerprint, "comment": "hedging"})
    assert acked.status_code == 201, acked.text
    assert acked.json()["acked_by"] == "RISK_OPS_TOKEN"

    listed = (await call(app, "GET", "/v1/alerts/controls")).json()
    assert [s["silence_id"] for s in listed["silences"]] == [silence["silence_id"]]
    assert [a["fingerprint"] for a in listed["acknowledgements"]] == [firing.fingerprint]

    ended = await call(app, "DELETE", f"/v1/alerts/silences/{silence['silence_id']}")
    assert ended.status_code == 200 and ended.json()["active"] is False
    assert (await call(app, "GET", "/v1/alerts/controls")).json()["silences"] == []

    rows = pg_storage.outbox.rows()
    assert sorted(r.status for r in rows) == ["sent", "suppressed"]  # nothing lost
    audit = [(r.event, r.payload.get("actor")) for r in pg_storage.audit.recent(20)
             if r.event in ("silence_created", "alert_acknowledged", "silence_expired")]
    assert audit == [("silence_expired", "RISK_OPS_TOKEN"),
                     ("alert_acknowledged", "RISK_OPS_TOKEN"),
                     ("silence_created", "RISK_OPS_TOKEN")]


async def test_bad_requests_get_typed_errors(app: Starlette) -> None:
    missing = await call(app, "POST", "/v1/alerts/ack", body={"key": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "RM410"
    gone = await call(app, "DELETE", "/v1/alerts/silences/nope")
    assert gone.status_code == 404
    for body in [{"matchers": "venue=okx", "duration_s": 60, "comment": "c"},
                 {"matchers": ["venue=okx"], "comment": "c"},
                 {"matchers": ["venue=okx"], "duration_s": -5, "comment": "c"},
                 {"matchers": ["desk=a"], "duration_s": 60, "comment": "c"},
                 {"matchers": ["venue=okx"], "duration_s": 60}]:
        answer = await call(app, "POST", "/v1/alerts/silences", body=body)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["code"] == "RM410"
    listed = (await call(app, "GET", "/v1/alerts/controls?all=1")).json()
    assert listed == {"silences": [], "acknowledgements": []}
