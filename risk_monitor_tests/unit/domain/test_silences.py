"""Silences and acknowledgements, Alertmanager semantics, with an injected time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from risk_monitor.domain.model import LimitStatus, Notification, NotificationKind
from risk_monitor.domain.silences import (
    Acknowledgement,
    Matcher,
    Silence,
    labels_of,
    silence_end,
    verdict,
)
from risk_monitor_tests.fixtures.storage import START, make_result, plan


def _note(status: str = "BREACH",
          scope: str = "venue:binance|instrument:BTC/USDT:USDT") -> Notification:
    _, (note,) = plan(None, make_result(status, START, scope=scope))
    return note


def _silence(*matchers: str, **kwargs: object) -> Silence:
    values: dict[str, object] = {"id": "s1", "matchers": tuple(Matcher.parse(m) for m in matchers),
                                 "starts_at": START, "ends_at": START + timedelta(hours=1),
                                 "created_by": "alice", "comment": "venue maintenance"}
    values.update(kwargs)
    return Silence(**values)  # type: ignore[arg-type]


def test_labels_come_from_the_notification_and_its_scope() -> None:
    assert labels_of(_note()) == {
        "limit_id": "max_notional", "scope": "venue:binance|instrument:BTC/USDT:USDT",
        "venue": "binance", "severity": "critical", "status": "BREACH", "group": "",
        "kind": "max_notional"}
    assert labels_of(_note(scope="portfolio"))["venue"] == ""
    # a scope that does not parse names no venue, and never stops delivery with an exception
    assert labels_of(_note(scope="okx"))["venue"] == ""
    assert verdict(_note(scope="okx"), [_silence("venue=okx")], [], START).send


@pytest.mark.parametrize(("matcher", "held"), [
    ("venue=binance", True), ("venue=okx", False), ("venue!=okx", True),
    ('limit_id=~"max_.*"', True), ('limit_id=~"max"', False),  # anchored, as Alertmanager
    ("severity!~warning|info", True), ("status=WARN", False),
])
def test_a_matching_active_silence_holds_the_notification(matcher: str, held: bool) -> None:
    result = verdict(_note(), [_silence(matcher)], [], START + timedelta(minutes=5))
    assert result.send is not held
    assert result.silenced_by == (("s1",) if held else ())


def test_every_matcher_must_match() -> None:
    silence = _silence("venue=binance", "severity=warning")
    assert verdict(_note(), [silence], [], START).send


def test_a_silence_holds_only_between_start_and_end_or_until_expired() -> None:
    silence = _silence("venue=binance")
    assert verdict(_note(), [silence], [], START - timedelta(seconds=1)).send
    assert not verdict(_note(), [silence], [], START).send
    assert verdict(_note(), [silence], [], START + timedelta(hours=1)).send
    ended = replace(silence, expired_at=START + timedelta(minutes=10))
    assert verdict(_note(), [ended], [], START + timedelta(minutes=10)).send


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"matchers": ()}, "at least one matcher"),
    ({"matchers": (Matcher("limit_id", ".*", "=~"),)}, "every alert"),
    ({"ends_at": START}, "end after"),
    ({"created_by": " "}, "author"),
    ({"comment": ""}, "comment"),
])
def test_a_bad_silence_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _silence("venue=binance", **kwargs)


def test_a_silence_window_is_a_duration_or_an_end_never_both_or_neither() -> None:
    end = START + timedelta(hours=3)
    assert silence_end(START, duration=timedelta(hours=2), ends_at=None) == START + \
        timedelta(hours=2)
    assert silence_end(START, duration=None, ends_at=end) == end
    for duration, ends_at in [(timedelta(hours=2), end), (None, None)]:
        with pytest.raises(ValueError, match="exactly one"):
            silence_end(START, duration=duration, ends_at=ends_at)
    for duration in [timedelta(0), timedelta(seconds=-5)]:
        with pytest.raises(ValueError, match="positive"):
            silence_end(START, duration=duration, ends_at=None)


def test_bad_matchers_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        Matcher.parse("desk=a")
    with pytest.raises(ValueError, match="bad regex"):
        Matcher.parse('limit_id=~"("')
    with pytest.raises(ValueError, match="not a matcher"):
        Matcher.parse("venue")


def test_an_ack_stops_repeats_of_its_episode_until_the_status_changes() -> None:
    note = _note()
    ack = Acknowledgement(fingerprint=note.fingerprint, episode=note.episode,
                          status=LimitStatus.BREACH, acked_by="bob", acked_at=START)
    repeat = replace(note, kind=NotificationKind.REPEAT)
    held = verdict(repeat, [], [ack], START)
    assert (held.send, held.acknowledged_by) == (False, "bob")
    assert verdict(note, [], [ack], START).send  # not a repeat
    changed = replace(repeat, status=LimitStatus.UNKNOWN)
    assert verdict(changed, [], [ack], START).send  # the status changed
    assert verdict(replace(repeat, episode=note.episode + 1), [], [ack], START).send
