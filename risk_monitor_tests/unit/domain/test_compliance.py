"""Compliance: status intervals, the current summary, time in breach."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from risk_monitor.domain.compliance import (
    ComplianceStatus,
    StatusInterval,
    compliance_summary,
    desk_status,
    end_removed_limits,
    seconds_in_status,
    update_intervals,
)
from risk_monitor.domain.model import LimitStatus
from risk_monitor_tests.unit.domain.builders import NOW, result


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_intervals_follow_status_changes() -> None:
    open_: dict[str, StatusInterval] = {}
    closed: list[StatusInterval] = []
    timeline = [("OK", 0, None), ("OK", 10, None), ("WARN", 20, 0.85), ("WARN", 25, 0.9),
                ("BREACH", 30, 1.1), ("BREACH", 40, 1.05), ("OK", 90, 0.5)]
    for status, seconds, used in timeline:
        update = update_intervals(open_.values(), [result(status, at(seconds), utilisation=used)])
        closed.extend(update.close)
        open_.update({i.fingerprint: i for i in update.open})
    assert [(i.status.value, i.since, i.until) for i in closed] == [
        ("OK", at(0), at(20)), ("WARN", at(20), at(30)), ("BREACH", at(30), at(90))]
    assert closed[1].worst_utilisation == pytest.approx(0.9)  # grew while open
    assert closed[2].worst_utilisation == pytest.approx(1.1)  # kept the worst, not the last
    (current,) = open_.values()
    assert current.status is LimitStatus.OK and current.until is None and current.since == at(90)


def test_same_status_extends_the_interval_and_keeps_the_worst_value() -> None:
    first = update_intervals([], [result("WARN", at(0), utilisation=0.9)])
    open_ = {i.fingerprint: i for i in first.open}
    (again,) = update_intervals(open_.values(), [result("WARN", at(5), utilisation=0.85)]).open
    assert (again.since, again.last_seen_at, again.worst_utilisation) == (at(0), at(5), 0.9)


def test_a_result_older_than_the_last_sighting_never_rewrites_the_past() -> None:
    first = update_intervals([], [result("OK", at(0)), result("OK", at(60))])
    (current,) = first.open
    late = update_intervals([current], [result("BREACH", at(30))])
    assert late.close == [] and late.open == []


def test_one_batch_with_several_changes_of_one_series_keeps_every_interval() -> None:
    update = update_intervals([], [result("WARN", at(20)), result("OK", at(0)),
                                   result("BREACH", at(40))])
    assert [(i.status.value, i.since, i.until) for i in update.close] == [
        ("OK", at(0), at(20)), ("WARN", at(20), at(40))]
    assert [(i.status.value, i.until) for i in update.open] == [("BREACH", None)]


def test_the_desk_status_follows_the_one_status_order() -> None:
    assert desk_status([]) is ComplianceStatus.UNKNOWN
    assert desk_status([LimitStatus.OK, LimitStatus.WARN]) is ComplianceStatus.WARNING
    assert desk_status([LimitStatus.WARN, LimitStatus.UNKNOWN]) is ComplianceStatus.UNKNOWN
    assert desk_status([LimitStatus.UNKNOWN, LimitStatus.BREACH]) is ComplianceStatus.BREACH
    assert desk_status([LimitStatus.OK]) is ComplianceStatus.COMPLIANT


def test_seconds_in_each_status_over_a_window() -> None:
    intervals = [
        StatusInterval("a", "portfolio", LimitStatus.BREACH, at(-3600 * 30), at(-3600 * 20), 1.2,
                       at(-3600 * 20)),
        StatusInterval("a", "portfolio", LimitStatus.OK, at(-3600 * 20), at(-3600), None,
                       at(-3600)),
        StatusInterval("a", "portfolio", LimitStatus.BREACH, at(-3600), None, 1.1,
                       NOW),  # still open
        StatusInterval("b", "venue:okx", LimitStatus.WARN, at(-7200), None, 0.9,
                       NOW),
    ]
    spent = seconds_in_status(intervals, NOW - timedelta(hours=24), NOW)
    # a: 4 h of the first breach fall inside the window (-24 h to -20 h) + the open last hour
    assert spent[("a", "portfolio")][LimitStatus.BREACH] == pytest.approx(4 * 3600 + 3600)
    assert spent[("a", "portfolio")][LimitStatus.OK] == pytest.approx(19 * 3600)
    assert spent[("b", "venue:okx")] == {LimitStatus.OK: 0.0, LimitStatus.WARN: 7200.0,
                                         LimitStatus.BREACH: 0.0, LimitStatus.UNKNOWN: 0.0}
    with pytest.raises(ValueError):
        seconds_in_status(intervals, NOW, NOW)


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [
        (["OK", "OK"], ComplianceStatus.COMPLIANT),
        (["OK", "WARN"], ComplianceStatus.WARNING),
        (["WARN", "UNKNOWN"], ComplianceStatus.UNKNOWN),
        (["UNKNOWN", "BREACH", "OK"], ComplianceStatus.BREACH),
        ([], ComplianceStatus.UNKNOWN),
    ],
)
def test_summary(statuses: list[str], overall: ComplianceStatus) -> None:
    results = [result(s, NOW, limit_id=f"l{i}", scope="portfolio") for i, s in enumerate(statuses)]
    summary = compliance_summary(results)
    assert summary.status is overall
    assert summary.total == len(statuses)
    assert sum(summary.counts.values()) == len(statuses)
    assert set(summary.counts) == {"OK", "WARN", "BREACH", "UNKNOWN"}
    if "BREACH" in statuses:
        assert summary.worst is not None and summary.worst.status is LimitStatus.BREACH
    assert summary.as_dict()["status"] == overall.value


def test_a_limit_the_new_document_dropped_ends_at_the_change() -> None:
    kept, dropped = result("BREACH", at(0)), result("WARN", at(0), limit_id="dropped")
    opened = update_intervals([], [kept, dropped]).open
    change = at(60)

    (ended,) = end_removed_limits(opened, [result("BREACH", change)], at=change,
                                  config_version="cfg-v2")

    assert (ended.limit_id, ended.status, ended.since, ended.until) == (
        "dropped", LimitStatus.WARN, at(0), change)
    assert ended.config_version == "cfg-v2"  # the version that removed it
    spent = seconds_in_status([ended], at(0), at(3600))
    assert spent[("dropped", ended.scope)][LimitStatus.WARN] == 60.0  # not the whole hour
    # never before its last sighting; a document keeping every limit ends nothing
    assert end_removed_limits(opened, [], at=at(-5), config_version="v")[0].until == at(0)
    assert end_removed_limits(opened, [kept, dropped], at=change, config_version="v") == []
