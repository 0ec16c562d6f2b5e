"""Every alert of ``limit_breach`` carries its lineage, hot path included (issue 11).

Real parts only: the simulators (scenario ``limit_breach``, manual clock), ``risk-monitor serve``
as a subprocess with its store on PostgreSQL and Redis, a Dagster instance on PostgreSQL
(``deploy/postgres/dagster.yaml``) the service reports its evaluations to, slack-sdk against the
Slack simulator, and ``risk-monitor audit trace --json`` as a reviewer runs it.

For every alert the Slack simulator received: the trace names the evaluation (service
instance), every input's data version (the quotes also per venue), the limit configuration
version (stored) and a git-or-content code version; a ``live_limit_status`` event with the same
data versions is in the instance's event log, stamped at most 2 s after the Slack message (the
issue's acceptance figure), and the message was edited in place with a link to it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import dagster as dg
import httpx
import pytest

from risk_monitor.adapters.sql import Storage
from risk_monitor.dagster_catalog import EVALUATION_TAG, LIVE_ASSET, find_event
from risk_monitor_tests.fixtures.e2e import POSTGRES_DAGSTER_YAML, alert_payloads
from risk_monitor_tests.fixtures.hot_path import (
    BTC_LIMIT,
    COMPONENTS,
    limits_document,
    settings_document,
    write_settings,
)
from risk_monitor_tests.fixtures.service import (
    free_port,
    risk_monitor_command,
    spawn_service,
    wait_until,
)
from risk_monitor_tests.fixtures.services import create_database, drop_database
from risk_sim.launcher import SimulatorStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

SCENARIO = "limit_breach"
#: the issue's figure: the Dagster event exists within 2 s of the Slack message
EVENT_WITHIN_S = 2.0
#: how long the test waits for anything (a busy CI machine); the figure above is asserted apart
WAIT_S = 90.0
INPUTS = {"market_prices", "exchange_positions", "exchange_balances", "custodian_balances",
          "limit_config"}
CODE_VERSION = re.compile(r"^(git:[0-9a-f]{7,40}(\+dirty)?|src:[0-9a-f]{16,64}|[a-z]+:.+)$")
UI_URL = "http://127.0.0.1:3999"


@dataclass
class Desk:
    stack: SimulatorStack
    proc: subprocess.Popen[bytes]
    log: Path
    config: Path
    env: dict[str, str]
    storage: Storage
    instance: Any
    rest: str
    instance_id: str

    @property
    def slack(self) -> Any:
        assert self.stack.slack is not None
        return self.stack.slack

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def desk(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    from risk_monitor_tests.fixtures.services import private_redis_prefix

    tmp = tmp_path_factory.mktemp("lineage-e2e")
    database_url = create_database("rm_e2e_lineage")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copyfile(POSTGRES_DAGSTER_YAML, home / "dagster.yaml")
    stack = SimulatorStack(SCENARIO, clock="manual", components=COMPONENTS, control=False)
    proc: subprocess.Popen[bytes] | None = None
    storage: Storage | None = None
    with private_redis_prefix(redis_url) as prefix:
        try:
            stack.start()
            rest_port = free_port()
            doc = settings_document(stack, database_url=database_url, redis_url=redis_url,
                                    prefix=prefix, tmp=tmp,
                                    limits=limits_document(data_age=False),
                                    service={"rest_port": rest_port, "grpc_port": free_port()})
            doc["alerts"] = {**doc.get("alerts", {}), "dagster_ui_url": UI_URL}
            config = write_settings(tmp / "risk-monitor.yaml", doc)
            env = {**stack.env(), "DAGSTER_HOME": str(home),
                   "RISK_MONITOR_DAGSTER_PG_URL": database_url,
                   "RISK_MONITOR_LOG_LEVEL": "INFO"}
            # the instance's schema exists before two processes open it
            with pytest.MonkeyPatch.context() as patch:
                for name, value in env.items():
                    patch.setenv(name, value)
                instance = dg.DagsterInstance.get()
            log = tmp / "serve.log"
            proc = spawn_service(config, env=env, log_path=log)
            storage = Storage.open(database_url)
            running = Desk(stack, proc, log, config, env, storage, instance,
                           f"http://127.0.0.1:{rest_port}", doc["service"]["instance_id"])

            def ready() -> bool:
                if proc is not None and proc.poll() is not None:
                    pytest.fail(f"risk-monitor serve exited:\n{running.output()}")
                return httpx.get(f"{running.rest}/readyz", timeout=5).status_code == 200

            wait_until(ready, timeout=WAIT_S, interval=0.2, message="risk-monitor serve ready")
            yield running
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            if storage is not None:
                storage.close()
            stack.stop()
            drop_database(database_url)


def _audit_records(storage: Storage) -> dict[str, dict[str, Any]]:
    """Alert audit payloads by idempotency key."""
    return {r.payload["idempotency_key"]: r.payload
            for r in storage.audit.recent(limit=1000) if r.event.startswith("alert.")}


def _trace(desk: Desk, key: str) -> list[dict[str, Any]]:
    result = subprocess.run([*risk_monitor_command(), "--config", str(desk.config), "audit",
                             "trace", key, "--json"], env={**_base_env(), **desk.env},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return list(json.loads(result.stdout))


def _base_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("RISK_MONITOR_CONFIG", None)
    return env


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    return {e["text"]["text"]: e.get("url") for b in message.get("blocks") or []
            if b.get("type") == "actions" for e in b["elements"]}


@pytest.fixture(scope="module")
def played(desk: Desk) -> dict[str, Any]:
    """Play the scenario; after each Slack message, find its Dagster event (polled with a
    deadline) and note the event's stored time against the message's arrival."""
    timings: dict[str, float] = {}
    events: dict[str, Any] = {}
    seen = 0
    previous = "OK"
    while (record := desk.stack.player.step()) is not None:
        status = record["expect"][BTC_LIMIT]["status"]
        if status == previous:
            continue  # the baseline, the breach that persists: nothing to say
        previous = status
        messages = wait_until(
            lambda n=seen: (found := [m for m in desk.slack.messages
                                      if (m.get("metadata") or {}).get("event_payload")])
            and len(found) > n and found,
            timeout=WAIT_S, message=f"Slack message #{seen + 1} ({record['label']})")
        for message in messages[seen:]:
            key = message["metadata"]["event_payload"]["idempotency_key"]
            payload = wait_until(lambda k=key: _audit_records(desk.storage).get(k),
                                 timeout=WAIT_S, message=f"audit record of {key}")
            evaluation_id = payload["evaluation_id"]
            event = wait_until(
                lambda e=evaluation_id: find_event(desk.instance, e, ui_url=UI_URL),
                timeout=WAIT_S, interval=0.02, message=f"Dagster event of {key}")
            timings[key] = event.timestamp - message["received_at"]
            events[key] = event
        seen = len(messages)
    wait_until(lambda: desk.storage.outbox.counts()["pending"] == 0
               and desk.storage.outbox.counts()["sending"] == 0,
               timeout=WAIT_S, message="outbox drained")
    return {"timings": timings, "events": events}


def test_the_scenario_alerts_from_the_hot_path(desk: Desk, played: dict[str, Any]) -> None:
    payloads = alert_payloads(desk.slack.messages)
    assert [(p["kind"], p["status"]) for p in payloads] == [
        ("firing", "WARN"), ("escalated", "BREACH"), ("resolved", "OK")]
    records = _audit_records(desk.storage)
    assert all(records[p["idempotency_key"]]["source"] == "service" for p in payloads)


def test_every_alert_traces_to_its_inputs_config_and_code(desk: Desk,
                                                          played: dict[str, Any]) -> None:
    known_configs = {v.version for v in desk.storage.config_versions.history()}
    payloads = alert_payloads(desk.slack.messages)
    assert payloads
    for payload in payloads:
        key = payload["idempotency_key"]
        [episode] = _trace(desk, payload["correlation_id"])
        assert key in {n["idempotency_key"] for n in episode["notifications"]}
        [detection] = [d for d in episode["detections"] if d["idempotency_key"] == key]
        assert detection["evaluation"] == f"service instance {desk.instance_id}"
        inputs = {i["input"]: i for i in detection["inputs"]}
        assert set(inputs) >= INPUTS, sorted(inputs)
        for name in INPUTS:
            assert inputs[name]["data_version"], (key, name, inputs[name])
        assert set(inputs["market_prices"]["venues"]) == {"binance", "okx"}
        assert all(v["data_version"] for v in inputs["market_prices"]["venues"].values())
        assert detection["config_version"] in known_configs
        assert episode["config_versions"][detection["config_version"]] is not None
        assert CODE_VERSION.match(str(detection["code_version"])), detection["code_version"]
        assert detection["code_version"].split(":")[0] in {"git", "src"}
        # the trace found the hot path's event in the Dagster instance (DAGSTER_HOME)
        event = detection["dagster_event"]
        assert event is not None and event["url"].startswith(f"{UI_URL}/assets/{LIVE_ASSET}")
        for name in INPUTS:
            assert event["metadata"][f"input/{name}"] == \
                inputs[name]["data_version"]
        for venue, part in inputs["market_prices"]["venues"].items():
            assert event["metadata"][f"input/market_prices/{venue}"] == \
                part["data_version"]


def test_each_hot_path_alert_is_a_dagster_event_within_2_s(desk: Desk,
                                                           played: dict[str, Any]) -> None:
    records = _audit_records(desk.storage)
    payloads = alert_payloads(desk.slack.messages)
    assert set(played["events"]) == {p["idempotency_key"] for p in payloads}
    for payload in payloads:
        key = payload["idempotency_key"]
        audit = records[key]
        event = played["events"][key]
        [record] = [r for r in desk.instance.fetch_materializations(
            dg.AssetKey(LIVE_ASSET), limit=100).records if r.storage_id == event.storage_id]
        materialization = record.asset_materialization
        assert materialization is not None
        assert materialization.tags[EVALUATION_TAG] == audit["evaluation_id"]
        assert materialization.tags["dagster/data_version"] == audit["dagster_data_version"]
        for name, seen in audit["input_data_versions"].items():
            assert materialization.metadata[f"input/{name}"].value == \
                seen["data_version"]
        assert payload["correlation_id"] in materialization.metadata["correlation_ids"].value
    print("Slack message -> Dagster event (s):",  # shown with -s; the figure of docs/audit.md
          {k.rsplit(":", 2)[-2:][0] + ":" + k.rsplit(":", 1)[-1]: round(s, 3)
           for k, s in played["timings"].items()})
    late = {k: round(s, 3) for k, s in played["timings"].items() if s > EVENT_WITHIN_S}
    assert not late, f"Dagster event later than {EVENT_WITHIN_S}s after the Slack message: {late}"


def _versions_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message as posted and as each ``chat.update`` left it."""
    return [{"blocks": message.get("blocks")}] if not message["updates"] else [
        *({"blocks": u["blocks"]} for u in message["updates"])]


def test_each_slack_message_is_edited_with_its_dagster_event_link(
        desk: Desk, played: dict[str, Any]) -> None:
    """The message each notification produced (its outbox delivery ref: the first post, the
    thread reply, or the escalation's copy in the critical channel) is edited in place with
    the link to its evaluation's event. (The thread's first message is also edited to show
    the latest state; that state's own message carries its link.)"""
    refs = {row.idempotency_key: row.delivery_ref for row in desk.storage.outbox.rows()}
    assert len(refs) == 3
    for key, ref in refs.items():
        assert ref is not None
        channel, _, ts = ref.partition(":")
        [message] = [m for m in desk.slack.messages if m["channel"] == channel and m["ts"] == ts]
        url = played["events"][key].url
        wait_until(lambda m=message, u=url: any(_buttons(v).get("Dagster event") == u
                                                for v in _versions_of(m)),
                   timeout=WAIT_S, message=f"chat.update of {key} with its event link")
        assert parse_qs(urlparse(url).query)["time"] == [
            str(int(played["events"][key].timestamp * 1000))]
    posts = [r for r in desk.slack.requests if r["method"] == "chat.postMessage"]
    assert len(posts) == 4  # WARN, BREACH reply + critical copy, RESOLVED: nothing re-posted
