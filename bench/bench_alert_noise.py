"""Slack messages per hour on a simulated desk day: calm (goal 0) and volatile (goal one per
real status change), at the default settings and with every noise control off (the defaults
before issue 12).

The desk is driven through the real alert planner (``risk_monitor.domain.alerts.plan_alerts``)
with an injected clock: one evaluation of every limit each ``--step`` seconds for ``--hours``.
Each notification the planner emits is one Slack message (a post or a threaded reply).

- calm: 10 limits well inside their levels, plus one custody data-age limit. The custodian is
  polled every ``service.custody_poll_s``; each poll fails with probability
  ``--poll-failure`` (a flaky custodian, no outage) and takes 0.2-2 s; the limit is UNKNOWN
  while the newest custody data is older than ``market_data.custody_max_age_s``. The service
  restarts 3 times: no source has answered for the first 20 s (every limit UNKNOWN), and the
  warm-up grace (``WarmUp``, fed each evaluation's sources as the service does) holds only the
  UNKNOWNs that sources silent since the start explain; custody data still stale once the
  custodian has answered would page.
- volatile: 10 limits whose true level moves between OK, WARN and BREACH every 20-60 minutes;
  the measured value is the true level plus noise (sd 40 against warn 800 / breach 1000), so
  readings near a level cross it now and then.

A *real status change* is counted on the readings themselves, independently of the planner
(``desk_changes``): the band of a reading (OK / WARN / BREACH, UNKNOWN without a value) becomes
the desk's status once readings have stayed in it for the hold the desk agreed on: BREACH at
once (the first breaching reading is real; ``for`` is 0), WARN after ``alerts.warn_for_s``
(0), UNKNOWN after ``alerts.unknown_for_s``, OK after ``alerts.keep_firing_for_s``; a reading leaves
a WARN/BREACH status only once it is ``alerts.hysteresis`` x breach level past the level. A
status held shorter than its hold is no change. The true regime changes are printed beside it.

Run from the repository root (no server needed)::

    python bench/bench_alert_noise.py
    python bench/bench_alert_noise.py --hours 24 --step 10 --seed 7
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk_monitor.application import alert_policy  # noqa: E402
from risk_monitor.domain.alerts import (  # noqa: E402
    AlertPolicy,
    WarmUp,
    plan_alerts,
    warmup_grace_s,
)
from risk_monitor.domain.coverage import SourceProblem  # noqa: E402
from risk_monitor.domain.model import (  # noqa: E402
    AlertState,
    LimitResult,
    LimitStatus,
    SourceKind,
    SourceStatus,
)
from risk_monitor.platform.settings import Settings  # noqa: E402

START = datetime(2026, 3, 2, tzinfo=UTC)
WARN, BREACH = 800.0, 1000.0
RESTART_BLIND_S = 20.0
CUSTODY_LIMIT = "custody_data_age"
LEVELS = {LimitStatus.OK: 600.0, LimitStatus.WARN: 880.0, LimitStatus.BREACH: 1100.0}

#: readings[step][limit id] (None: no fresh data, UNKNOWN)
Readings = list[dict[str, float | None]]


def status_of(value: float | None) -> LimitStatus:
    if value is None:
        return LimitStatus.UNKNOWN
    return LimitStatus.BREACH if value >= BREACH else LimitStatus.WARN if value >= WARN \
        else LimitStatus.OK


def result(limit_id: str, value: float | None, at: datetime) -> LimitResult:
    custody = limit_id == CUSTODY_LIMIT  # a data-age limit on the custodian, else the desk's
    return LimitResult(limit_id=limit_id, limit_kind="data_age" if custody else "max_notional",
                       scope="venue:custody" if custody else "venue:desk",
                       status=status_of(value), value=value, warn_level=WARN,
                       breach_level=BREACH, utilisation=None if value is None else value / BREACH,
                       as_of=at, config_version="bench")


def sources(row: dict[str, float | None], at: datetime
            ) -> tuple[list[SourceStatus], list[SourceProblem]]:
    """What an evaluation of ``row`` reports about its two sources (the desk's exchange account
    and the custodian): a blind start has no report at all, stale custody data is a problem."""
    if all(v is None for v in row.values()):  # just started: no source has answered yet
        return [], [SourceProblem(None, venue, None, f"{venue}: no data source reported", None)
                    for venue in ("desk", "custody")]
    statuses = [SourceStatus(kind=SourceKind.EXCHANGE, venue="desk", account="main", ok=True,
                             as_of=at)]
    fresh = row.get(CUSTODY_LIMIT) is not None
    statuses.append(SourceStatus(kind=SourceKind.CUSTODIAN, venue="custody", account="*",
                                 ok=fresh, as_of=at))
    problems = [] if fresh else [SourceProblem(SourceKind.CUSTODIAN, "custody", None,
                                               "custody: source is stale", at)]
    return statuses, problems


@dataclass(frozen=True)
class Source:
    """The custodian's poll interval and data-age budget (the settings that decide staleness)."""

    poll_s: float
    budget_s: float


def run(policy: AlertPolicy, step_s: float, readings: Readings, restarts: list[float],
        grace_s: float) -> Counter[str]:
    """Messages the planner sends over the day, by kind."""
    states: dict[str, AlertState] = {}
    sent: Counter[str] = Counter()
    warm_up: WarmUp | None = None  # as the service feeds it (hot path: after each evaluation)
    for i, row in enumerate(readings):
        t = i * step_s
        now = START + timedelta(seconds=t)
        for restart in restarts:
            if restart <= t < restart + step_s:
                warm_up = WarmUp(until=now + timedelta(seconds=grace_s))
        if warm_up is not None:
            warm_up = warm_up.seen(*sources(row, now))
        active = replace(policy, warm_up=warm_up)
        plan = plan_alerts(states, [result(lid, v, now) for lid, v in row.items()], now, active)
        for state in plan.states:
            states[state.fingerprint] = state
        sent.update(n.kind.value for n in plan.notifications)
    return sent


def _band(value: float | None, desk: LimitStatus, hysteresis: float) -> LimitStatus:
    """The reading's status; a WARN/BREACH desk status is left only past the hysteresis band."""
    raw = status_of(value)
    if value is None or desk not in (LimitStatus.WARN, LimitStatus.BREACH) \
            or raw.rank >= desk.rank:
        return raw
    level = BREACH if desk is LimitStatus.BREACH else WARN
    return desk if value > level - hysteresis * BREACH else raw


def desk_changes(readings: Readings, step_s: float, desk_policy: AlertPolicy) -> int:
    """Real status changes: a band held at least its hold (see the module docstring)."""
    changes = 0
    for limit_id in readings[0]:
        hold = {LimitStatus.BREACH: desk_policy.for_s(limit_id, LimitStatus.BREACH),
                LimitStatus.WARN: desk_policy.for_s(limit_id, LimitStatus.WARN),
                LimitStatus.UNKNOWN: desk_policy.for_s(limit_id, LimitStatus.UNKNOWN),
                LimitStatus.OK: desk_policy.keep_firing_s(limit_id)}
        desk, candidate, since = LimitStatus.OK, None, 0.0
        for i, row in enumerate(readings):
            t = i * step_s
            band = _band(row[limit_id], desk, desk_policy.hysteresis)
            if band is desk:
                candidate = None
                continue
            if band is not candidate:
                candidate, since = band, t
            if t - since >= hold[band]:
                desk, candidate, changes = band, None, changes + 1
    return changes


def calm(seed: int, steps: int, step_s: float, source: Source, restarts: list[float],
         poll_failure: float) -> Readings:
    rng = random.Random(seed)
    limits = [f"limit_{i}" for i in range(10)]
    polls: list[tuple[float, bool]] = []  # (answer time, ok) of each custody poll, as started
    t = 3.0
    while t < steps * step_s:
        polls.append((t + rng.uniform(0.2, 2.0), rng.random() >= poll_failure))
        t += source.poll_s
    readings: Readings = []
    last_ok: float | None = None
    p = 0
    for i in range(steps):
        now = i * step_s
        while p < len(polls) and polls[p][0] <= now:
            if polls[p][1]:
                last_ok = 3.0 + p * source.poll_s  # the data's as-of: when the poll started
            p += 1
        blind = any(r <= now < r + RESTART_BLIND_S for r in restarts)
        row: dict[str, float | None] = {
            lid: None if blind else 500.0 + rng.gauss(0, 20) for lid in limits}
        fresh = last_ok is not None and now - last_ok <= source.budget_s
        row[CUSTODY_LIMIT] = 40.0 if fresh and not blind else None
        readings.append(row)
    return readings


def volatile(seed: int, steps: int, step_s: float) -> tuple[Readings, int]:
    """Readings and the number of true regime changes."""
    rng = random.Random(seed)
    limits = [f"limit_{i}" for i in range(10)]
    end = steps * step_s
    regimes: dict[str, list[tuple[float, LimitStatus]]] = {}
    changes = 0
    for limit_id in limits:
        t, level, path = 0.0, LimitStatus.OK, []
        while t < end:
            path.append((t, level))
            t += rng.uniform(20 * 60, 60 * 60)
            level = rng.choice([s for s in LEVELS if s is not level])
            changes += t < end
        regimes[limit_id] = path
    readings: Readings = []
    for i in range(steps):
        t = i * step_s
        row: dict[str, float | None] = {}
        for limit_id in limits:
            level = next(s for start, s in reversed(regimes[limit_id]) if start <= t)
            row[limit_id] = LEVELS[level] + rng.gauss(0, 40)
        readings.append(row)
    return readings, changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--step", type=float, default=10.0, help="seconds between evaluations")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--poll-failure", type=float, default=0.10,
                        help="probability that one custody poll fails")
    args = parser.parse_args()
    settings = Settings.model_validate({})
    defaults = alert_policy(settings)
    svc, md = settings.service, settings.market_data
    default_source = Source(svc.custody_poll_s, md.custody_max_age_s)
    grace_s = settings.alerts.warmup_grace_s or warmup_grace_s(  # as the service computes it
        [svc.positions_poll_s, svc.custody_poll_s], md.max_age_s)
    policies = {
        "before issue 12 (every noise control 0, custody poll 30 s = budget 30 s)":
            (AlertPolicy(), Source(30.0, 30.0), 0.0),
        f"default settings (keep_firing_for_s {defaults.keep_firing_for_s:g}, hysteresis "
        f"{defaults.hysteresis:g}, unknown_for_s {defaults.unknown_for_s:g}, for "
        f"{defaults.group_wait_s:g}, custody poll {default_source.poll_s:g} s / budget "
        f"{default_source.budget_s:g} s, warm-up grace {grace_s:g} s)":
            (defaults, default_source, grace_s),
    }
    steps = int(args.hours * 3600 / args.step)
    restarts = [r for r in (6 * 3600.0, 12 * 3600.0, 18 * 3600.0) if r < args.hours * 3600]
    print(f"{args.hours:g} h simulated, one evaluation every {args.step:g} s, seed {args.seed}, "
          f"custody poll failure {args.poll_failure:g}")
    print("| day | policy | Slack messages | per hour | real status changes | messages per "
          "real change | true regime changes | messages by kind |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    vol, regime_changes = volatile(args.seed, steps, args.step)
    vol_changes = desk_changes(vol, args.step, defaults)
    for name, (policy, source, grace) in policies.items():
        day = calm(args.seed, steps, args.step, source, restarts, args.poll_failure)
        for label, readings, real, regimes, starts in (
                ("calm", day, desk_changes(day, args.step, defaults), 0, restarts),
                ("volatile", vol, vol_changes, regime_changes, [])):
            sent = run(policy, args.step, readings, starts, grace)
            total = sum(sent.values())
            ratio = f"{total / real:.2f}" if real else "-"
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(sent.items())) or "-"
            print(f"| {label} | {name} | {total} | {total / args.hours:.2f} | {real} | {ratio} "
                  f"| {regimes} | {kinds} |")


if __name__ == "__main__":
    main()
