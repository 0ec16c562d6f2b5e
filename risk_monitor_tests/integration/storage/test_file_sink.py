"""The file/log sink: one JSON line per notification, through the same outbox."""

from __future__ import annotations

import json
from pathlib import Path

from risk_monitor.adapters.file_sink import FileSink
from risk_monitor.adapters.notifiers import build_notifier
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.bootstrap import outbox_dispatcher
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result


def test_file_sink_writes_one_json_line_per_notification(storage: Storage, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "sink" / "alerts.jsonl"
    for status in ("WARN", "BREACH", "OK"):
        evaluate(storage, make_result(status, clock.advance(1)))
    dispatcher = OutboxDispatcher(storage.engine, FileSink(path, clock=clock), clock=clock)
    assert dispatcher.dispatch_once(10).sent == 3
    assert dispatcher.dispatch_once(10).claimed == 0

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["firing", "escalated", "resolved"]
    assert [line["status"] for line in lines] == ["WARN", "BREACH", "OK"]
    assert lines[0]["previous_ref"] is None
    rows = storage.outbox.rows()
    assert lines[1]["previous_ref"] == rows[0].delivery_ref  # later states name their root
    assert [line["idempotency_key"] for line in lines] == [r.idempotency_key for r in rows]
    assert rows[0].delivery_ref == "file:alerts.jsonl:0"
    assert lines[0]["context"]["run_id"] == "run-1"


def test_without_slack_the_notifier_is_the_file_sink(tmp_path: Path) -> None:
    notifier = build_notifier(load_settings(data_dir=tmp_path))
    assert isinstance(notifier, FileSink)
    assert notifier.path == tmp_path / "alerts.jsonl"


def test_the_service_dispatcher_defaults_to_the_file_sink(storage: Storage, clock: FakeClock,
                                                          tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, alerts={"outbox_max_attempts": 3})
    dispatcher = outbox_dispatcher(settings, storage)
    assert isinstance(dispatcher.notifier, FileSink)
    assert (dispatcher.max_attempts, dispatcher.notifier_name) == (3, "file")
    clock.set(clock().replace(year=2020))  # due at once for the real clock of the dispatcher
    evaluate(storage, make_result("WARN", clock()))
    assert dispatcher.dispatch_once().sent == 1
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1
