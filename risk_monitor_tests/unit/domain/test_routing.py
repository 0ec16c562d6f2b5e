"""The alert routing tree: Alertmanager's first-match, ``continue``, nesting and inheritance."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from risk_monitor.domain.alerts import AlertPolicy, AlertRule, plan_alerts
from risk_monitor.domain.model import AlertSeverity, LimitStatus, Notification, NotificationKind
from risk_monitor.domain.routing import (
    channels_for,
    episode_copy_channels,
    escalation_channels,
    has_continue,
    parse_routes,
    route_channels,
)
from risk_monitor.platform.settings import SlackRoute
from risk_monitor_tests.fixtures.storage import START, make_result

BY_SEVERITY = {"info": "#risk-info", "warning": "#risk-alerts", "critical": "#risk-critical"}


def _note(status: str, *, scope: str = "venue:okx|instrument:BTC/USDT:USDT",
          limit_id: str = "btc_notional", group: str = "") -> Notification:
    policy = AlertPolicy(rules={limit_id: AlertRule(group=group)} if group else {})
    plan = plan_alerts({}, [make_result(status, START, scope=scope, limit_id=limit_id)], START,
                       policy)
    (note,) = plan.notifications
    return note


TREE = parse_routes([
    {"matchers": ['venue="okx"'], "channel": "#okx-desk", "routes": [
        {"matchers": ["severity=critical"], "channel": "#okx-critical"}]},
    {"matchers": ['group="custody"'], "channel": "#custody", "continue": True},
    {"matchers": ['limit_id=~"portfolio_.*"'], "channel": "#portfolio"},
])


def test_a_venue_route_takes_its_alerts_and_nests_by_severity() -> None:
    assert channels_for(_note("WARN"), TREE, BY_SEVERITY) == ["#okx-desk"]
    assert channels_for(_note("BREACH"), TREE, BY_SEVERITY) == ["#okx-critical"]


def test_no_match_falls_back_to_the_default_route_by_severity() -> None:
    binance = "venue:binance|instrument:BTC/USDT:USDT"
    assert channels_for(_note("WARN", scope=binance), TREE, BY_SEVERITY) == ["#risk-alerts"]
    assert channels_for(_note("UNKNOWN", scope=binance), TREE, BY_SEVERITY) == ["#risk-critical"]


def test_continue_lets_later_siblings_match_too() -> None:
    note = _note("WARN", scope="portfolio", limit_id="portfolio_gross", group="custody")
    assert channels_for(note, TREE, BY_SEVERITY) == ["#custody", "#portfolio"]
    # without continue the first match wins: okx + custody goes to the okx route only
    assert channels_for(_note("WARN", group="custody"), TREE, BY_SEVERITY) == ["#okx-desk"]


def test_a_continue_route_alone_still_ends_at_its_channel() -> None:
    note = _note("WARN", scope="portfolio", group="custody")
    assert channels_for(note, TREE, BY_SEVERITY) == ["#custody"]


def test_a_route_without_channel_inherits_its_parent() -> None:
    tree = parse_routes([{"matchers": ["severity=critical"], "routes": [
        {"matchers": ['venue="okx"'], "channel": "#okx-pager"}]}])
    labels = {"severity": "critical", "venue": "binance"}
    assert route_channels(tree, "#risk-critical", labels) == ["#risk-critical"]
    assert route_channels(tree, "#risk-critical", {**labels, "venue": "okx"}) == ["#okx-pager"]


@pytest.mark.parametrize(("raw", "where"), [
    ([{"matchers": ["region=eu"]}], "routes[0].matchers"),
    ([{"matchers": ['venue=~"("']}], "routes[0].matchers"),
    ([{"matchers": ["venue=okx"], "routes": [{"matchers": ["nonsense"]}]}],
     "routes[0].routes[0].matchers"),
])
def test_a_bad_route_is_named(raw: list[dict[str, object]], where: str) -> None:
    with pytest.raises(ValueError, match=rf"^{where.replace('[', '.').replace(']', '.')}"):
        parse_routes(raw)


@pytest.mark.parametrize("route", [{"matchers": []}, {"matchers": ["venue=a"], "channel": ""},
                                   {"matchers": ["venue=a"], "channel": "  "}])
def test_a_route_without_matchers_or_channel_is_refused_by_the_settings(
        route: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=r"matchers|channel"):
        SlackRoute.model_validate(route)


@pytest.mark.parametrize("channel", ["", "  "])
def test_a_blank_channel_is_refused_with_what_to_write_instead(channel: str) -> None:
    with pytest.raises(ValidationError, match=r"channel\n.*must name a Slack channel"):
        SlackRoute.model_validate({"matchers": ["venue=a"], "channel": channel})


def test_group_and_kind_are_labels() -> None:
    note = _note("WARN", group="derivatives")
    assert note.context["group"] == "derivatives"
    tree = parse_routes([{"matchers": ['kind="max_notional"', 'group="derivatives"'],
                          "channel": "#deriv"}])
    assert channels_for(note, tree, BY_SEVERITY) == ["#deriv"]
    assert channels_for(replace(note, context={}), tree, BY_SEVERITY) == ["#risk-alerts"]


def test_check_config_accepts_a_good_tree_and_names_a_bad_one() -> None:
    from risk_monitor.config_checks import CheckContext, check_alert_routes
    from risk_monitor.platform.settings import load_settings

    good = load_settings(venues=[{"id": "okx", "exchange": "okx"}], slack={"routes": [
        {"matchers": ['venue="okx"'], "channel": "#okx", "continue": True,
         "routes": [{"matchers": ['severity=~"critical|warning"']}]}]})
    assert check_alert_routes(good, CheckContext(settings_source="c.yaml")) == []
    bad = load_settings(venues=[{"id": "okx", "exchange": "okx"}], slack={"routes": [
        {"matchers": ['venue="okx"'], "routes": [{"matchers": ['severity=~"("']}]}]})
    (problem,) = check_alert_routes(bad, CheckContext(settings_source="c.yaml"))
    assert problem.key == "slack.routes[0].routes[0].matchers"
    assert "regex" in problem.message


def test_later_status_changes_go_to_the_channels_of_the_first_message() -> None:
    """The channels that got a copy of the episode's first message (by its status and
    severity) hear its escalation and resolve; the thread's channel and repeats do not."""
    tree = parse_routes([
        {"matchers": ['venue="okx"'], "channel": "#okx-desk", "continue": True},
        {"matchers": ['venue="okx"', "severity=warning"], "channel": "#desk-warnings"},
    ])
    assert has_continue(tree) and not has_continue(TREE[:1])
    escalated = replace(_note("BREACH"), kind=NotificationKind.ESCALATED)
    resolved = replace(_note("BREACH"), kind=NotificationKind.RESOLVED, status=LimitStatus.OK)
    for later in (escalated, resolved):
        assert episode_copy_channels(later, LimitStatus.WARN, AlertSeverity.WARNING, tree,
                                     BY_SEVERITY) == ["#desk-warnings"]
        # a BREACH-first episode never reached #desk-warnings: nothing later goes there
        assert episode_copy_channels(later, LimitStatus.BREACH, AlertSeverity.CRITICAL, tree,
                                     BY_SEVERITY) == []
    repeat = replace(escalated, kind=NotificationKind.REPEAT)
    assert episode_copy_channels(repeat, LimitStatus.WARN, AlertSeverity.WARNING, tree,
                                 BY_SEVERITY) == []


def test_a_de_escalation_or_resolve_looks_where_an_escalation_was_routed() -> None:
    """The channels to look in for the episode's escalation copy: its series' critical route
    (nested by venue here, the default by severity elsewhere); none for other kinds."""
    for kind, status in ((NotificationKind.DEESCALATED, LimitStatus.WARN),
                         (NotificationKind.RESOLVED, LimitStatus.OK)):
        okx = replace(_note("WARN"), kind=kind, status=status)
        assert escalation_channels(okx, TREE, BY_SEVERITY) == ["#okx-critical"]
        binance = replace(_note("WARN", scope="venue:binance|instrument:BTC/USDT:USDT"),
                          kind=kind, status=status)
        assert escalation_channels(binance, TREE, BY_SEVERITY) == ["#risk-critical"]
    for kind in (NotificationKind.FIRING, NotificationKind.ESCALATED, NotificationKind.REPEAT):
        assert escalation_channels(replace(_note("BREACH"), kind=kind), TREE, BY_SEVERITY) == []
