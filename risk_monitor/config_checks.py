"""What ``risk-monitor check-config`` checks beyond the settings' own validation.

Each check is an independent function ``(settings, context) -> list[Problem]`` in
:data:`CHECKS`; a new rule (production purity, another budget) is one more function in that
list. A problem names where it is (file), the key, what is wrong and the fix, so the command can
print one line per problem and exit non-zero.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from risk_monitor.platform.errors import ConfigError, RiskMonitorError
from risk_monitor.platform.settings import Settings, VenueSettings


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the configuration, with where and how to fix it."""

    source: str  # the file (or URL) the key lives in
    key: str
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.source}: {self.key}: {self.message} (fix: {self.fix})"


@dataclass
class CheckContext:
    """What the checks share: where the settings came from, and the limits once loaded."""

    settings_source: str
    limits_source: str = ""
    limits: Any | None = None  # risk_monitor.domain.limits.LimitConfig once loaded
    notes: list[str] = field(default_factory=list)


ConfigCheck = Callable[[Settings, CheckContext], list[Problem]]


def check_venues_are_ccxt_exchanges(settings: Settings, ctx: CheckContext) -> list[Problem]:
    """Every venue's ``exchange`` must be a ccxt exchange id (``krakenn`` is not)."""
    import ccxt

    known = set(ccxt.exchanges)
    problems = []
    for n, venue in enumerate(settings.venues):
        if venue.exchange not in known:
            close = sorted(e for e in known if e[:4] == venue.exchange[:4])[:5]
            problems.append(Problem(
                ctx.settings_source, f"venues[{n}].exchange",
                f"{venue.exchange!r} is not a ccxt exchange id",
                "use an id from `python -c 'import ccxt; print(ccxt.exchanges)'`"
                + (f", e.g. {', '.join(close)}" if close else "")))
    return problems


def check_venue_credentials(settings: Settings, ctx: CheckContext) -> list[Problem]:
    """Every credential the exchange requires is named by a ``*_env`` key and set."""
    import ccxt

    problems = []
    for n, venue in enumerate(settings.venues):
        exchange_class = getattr(ccxt, venue.exchange, None)
        if exchange_class is None:
            continue  # reported by check_venues_are_ccxt_exchanges
        required = exchange_class().requiredCredentials
        for credential, key in VenueSettings.CCXT_CREDENTIALS.items():
            if not required.get(credential):
                continue
            env_name = getattr(venue, key)
            where = f"venues[{n}].{key}"
            if not env_name:
                problems.append(Problem(ctx.settings_source, where,
                                        f"{venue.exchange} needs {credential!r}",
                                        f"set {key} to the environment variable holding it"))
            elif not os.environ.get(env_name):
                problems.append(Problem(ctx.settings_source, where,
                                        f"environment variable {env_name} is not set",
                                        f"export {env_name} (the {venue.id} {credential})"))
    for n, custodian in enumerate(settings.custodians):
        for key in ("api_key_env", "secret_key_env"):
            env_name = getattr(custodian, key)
            if not os.environ.get(env_name):
                problems.append(Problem(ctx.settings_source, f"custodians[{n}].{key}",
                                        f"environment variable {env_name} is not set",
                                        f"export {env_name}"))
    return problems


def _limits_document(settings: Settings, ctx: CheckContext) -> Mapping[str, Any]:
    """The limits document as the service and the runs read it (``config_service``'s client
    and file loader): from the configuration service when enabled with a URL, else the limits
    file; ConfigError when it cannot be read."""
    from risk_monitor.adapters.config_service import (
        ConfigServiceLocator,
        HttpConfigSource,
        load_limits_file,
    )

    service = settings.config_service
    if service.enabled and service.url:
        ctx.limits_source = f"{service.url.rstrip('/')}/v1/config/{service.component}"
        try:
            _version, document = HttpConfigSource(ConfigServiceLocator(service)).fetch(
                service.component)
        except RiskMonitorError as exc:
            raise ConfigError(f"cannot read the configuration service: {exc.message}",
                              key="config_service.url") from None
    else:
        ctx.limits_source = str(settings.effective_limits_file)
        document = load_limits_file(settings.effective_limits_file, service.component).document
    limits = document.get("limits")
    if not isinstance(limits, Mapping):
        raise ConfigError("the limits document must be a mapping", key="(document)")
    return limits


def check_limits_document(settings: Settings, ctx: CheckContext) -> list[Problem]:
    """The limits document loads and validates (file or configuration service)."""
    from risk_monitor.domain.limit_config import LimitConfig, _describe_error  # same key paths

    try:
        document = _limits_document(settings, ctx)
    except ConfigError as exc:
        return [Problem(ctx.limits_source or ctx.settings_source, exc.key or "limits",
                        exc.message, "correct the document (docs/limits.md)")]
    from pydantic import ValidationError

    try:
        ctx.limits = LimitConfig.model_validate(dict(document))
    except ValidationError as exc:
        return [Problem(ctx.limits_source, key, message, "see docs/limits.md for the schema")
                for key, message in (_describe_error(dict(e)) for e in exc.errors())]
    return []


def check_limit_scopes(settings: Settings, ctx: CheckContext) -> list[Problem]:
    """Every venue a limit (or the expected ``venues`` list) names is a configured venue or
    custodian: a limit on an unconfigured venue would never have data."""
    if ctx.limits is None or not (settings.venues or settings.custodians):
        return []
    configured = {v.id for v in settings.venues} | {c.id for c in settings.custodians}
    fix = f"configure it under venues/custodians or use one of {sorted(configured)}"
    problems = [Problem(ctx.limits_source, f"venues[{n}]",
                        f"{name!r} is not a configured venue or custodian", fix)
                for n, name in enumerate(ctx.limits.venues) if name not in configured]
    for n, limit in enumerate(ctx.limits.limits):
        venue = limit.scope.venue
        if venue is not None and venue != "*" and venue not in configured:
            problems.append(Problem(ctx.limits_source, f"limits[{n}].scope.venue",
                                    f"limit {limit.id!r} is on {venue!r}, which is not a "
                                    f"configured venue or custodian", fix))
    return problems


def check_data_age_budgets(settings: Settings, ctx: CheckContext) -> list[Problem]:
    """A data-age budget must be larger than the poll interval that refreshes the data, or
    every poll gap reads as stale."""
    # source budgets vs their polls are enforced by the settings model itself (settings.py)
    problems: list[Problem] = []
    if ctx.limits is None:
        return problems
    custodians = {c.id for c in settings.custodians}
    for n, limit in enumerate(ctx.limits.limits):
        if str(limit.kind) != "data_age":
            continue
        venue = limit.scope.venue
        polls = {"service.positions_poll_s": settings.service.positions_poll_s}
        if custodians and (venue in (None, "*") or venue in custodians):
            polls = ({"service.custody_poll_s": settings.service.custody_poll_s}
                     if venue in custodians else
                     {**polls, "service.custody_poll_s": settings.service.custody_poll_s})
        poll_key, poll = max(polls.items(), key=lambda item: item[1])
        for level in ("warn", "breach"):
            budget = getattr(limit, level)
            if budget is not None and budget <= poll:
                problems.append(Problem(
                    ctx.limits_source, f"limits[{n}].{level}",
                    f"data_age limit {limit.id!r} {level} {budget:g} s is not larger than "
                    f"{poll_key} {poll:g} s",
                    f"raise {level} above {poll:g} s or lower {poll_key}"))
    return problems


def check_alert_routes(settings: Settings, ctx: CheckContext) -> list[Problem]:
    """``slack.routes`` parses as a routing tree (matchers on known labels, valid regexes);
    a route on a venue or limit id that is not configured would never receive anything."""
    from risk_monitor.adapters.notifiers import slack_routes
    from risk_monitor.domain.routing import Route

    if settings.slack is None:
        return []
    try:
        routes = slack_routes(settings)
    except ConfigError as exc:
        key = exc.key or "slack.routes"
        return [Problem(ctx.settings_source, key, str(exc).removeprefix(f"{key}: "),
                        'write matchers as label=value, label!=value, label=~"regex" on '
                        "limit_id, scope, venue, severity, status, group or kind")]
    venues = {v.id for v in settings.venues} | {c.id for c in settings.custodians}
    limit_ids = {d.id for d in ctx.limits.limits} if ctx.limits is not None else set()
    problems: list[Problem] = []

    def walk(nodes: tuple[Route, ...], where: str) -> None:
        for i, route in enumerate(nodes):
            here = f"{where}[{i}]"
            for m in route.matchers:
                if m.op != "=":
                    continue
                if m.name == "venue" and venues and m.value not in venues:
                    problems.append(Problem(ctx.settings_source, f"{here}.matchers",
                                            f"venue {m.value!r} is not configured: the route "
                                            "never matches", f"use one of {sorted(venues)}"))
                if m.name == "limit_id" and limit_ids and m.value not in limit_ids:
                    problems.append(Problem(ctx.settings_source, f"{here}.matchers",
                                            f"limit {m.value!r} is not in the limits document: "
                                            "the route never matches",
                                            "use a limit id of the limits document"))
            walk(route.routes, f"{here}.routes")

    walk(routes, "slack.routes")
    return problems


#: run in order; each is independent (a later one may use what check_limits_document loaded)
CHECKS: list[ConfigCheck] = [
    check_venues_are_ccxt_exchanges,
    check_venue_credentials,
    check_limits_document,
    check_limit_scopes,
    check_data_age_budgets,
    check_alert_routes,
]


def run_checks(settings: Settings, settings_source: str) -> list[Problem]:
    """Every problem every check finds, in order."""
    ctx = CheckContext(settings_source=settings_source)
    return [problem for check in CHECKS for problem in check(settings, ctx)]
