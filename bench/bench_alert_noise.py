"""Slack messages per hour on a simulated desk day: calm (goal 0) and volatile (goal one per
real status change), at the default settings and with every noise control off (the defaults
before issue 12).

The desk is driven through the real alert planner (``risk_monitor.domain.alerts.plan_alerts``)
with an injected clock: one evaluation of every limit each ``--step`` seconds for ``--hours``.
Each notification the planner emits is one Slack message (a post or a threaded reply).

- calm: 10 limits well inside their levels; one custody data-age limit whose source answers
  just around its budget (UNKNOWN on ~10 % of evaluations, the Fireblocks 30 s poll vs 30 s
  budget case); the service restarts 3 times (every limit UNKNOWN for the first 20 s).
- volatile: 10 limits whose true level moves between OK, WARN and BREACH every 20-60 minutes;
  the measured value is the true level plus noise (sd 40 against warn 800 / breach 1000), so
  readings near a level cross it back and forth. A "real status change" is a change of the
  true level.

Run from the repository root (no server needed)::

    python bench/bench_alert_noise.py
    python bench/bench_alert_noise.py --hours 24 --step 10 --seed 7
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk_monitor.application import alert_policy  # noqa: E402
from risk_monitor.domain.alerts import AlertPolicy, plan_alerts  # noqa: E402
from risk_monitor.domain.model import AlertState, LimitResult, LimitStatus  # noqa: E402
from risk_monitor.platform.settings import Settings  # noqa: E402

START = datetime(2026, 3, 2, tzinfo=UTC)
WARN, BREACH = 800.0, 1000.0
GRACE_S = 90.0  # default warm-up grace: custody poll 30 s + quote budget 60 s
RESTART_BLIND_S = 20.0
LEVELS = {LimitStatus.OK: 600.0, LimitStatus.WARN: 880.0, LimitStatus.BREACH: 1100.0}


def status_of(value: float | None) -> LimitStatus:
    if value is None:
        return LimitStatus.UNKNOWN
    return LimitStatus.BREACH if value >= BREACH else LimitStatus.WARN if value >= WARN \
        else LimitStatus.OK


def result(limit_id: str, value: float | None, at: datetime) -> LimitResult:
    return LimitResult(limit_id=limit_id, limit_kind="max_notional", scope="portfolio",
                       status=status_of(value), value=value, warn_level=WARN,
                       breach_level=BREACH, utilisation=None if value is None else value / BREACH,
                       as_of=at, config_version="bench")


@dataclass
class Day:
    messages: int = 0
    real_changes: int = 0


Reading = Callable[[int, str, float], float | None]  # (step, limit, t seconds) -> value


def run(policy: AlertPolicy, hours: float, step_s: float, limits: list[str], reading: Reading,
        restarts: list[float]) -> int:
    states: dict[str, AlertState] = {}
    messages = 0
    steps = int(hours * 3600 / step_s)
    grace_until: datetime | None = None
    for i in range(steps):
        t = i * step_s
        now = START + timedelta(seconds=t)
        for restart in restarts:
            if restart <= t < restart + step_s:
                grace_until = now + timedelta(seconds=GRACE_S)
        blind = any(r <= t < r + RESTART_BLIND_S for r in restarts)
        active = replace(policy, unknown_grace_until=grace_until)
        results = [result(lid, None if blind else reading(i, lid, t), now) for lid in limits]
        plan = plan_alerts(states, results, now, active)
        for state in plan.states:
            states[state.fingerprint] = state
        messages += len(plan.notifications)
    return messages


def calm(seed: int) -> tuple[list[str], Reading, int]:
    rng = random.Random(seed)
    limits = [f"limit_{i}" for i in range(10)] + ["custody_data_age"]

    def reading(_: int, limit_id: str, __: float) -> float | None:
        if limit_id == "custody_data_age" and rng.random() < 0.10:
            return None  # the custodian's data is just past its budget: UNKNOWN
        return 500.0 + rng.gauss(0, 20)

    return limits, reading, 0


def volatile(seed: int, hours: float) -> tuple[list[str], Reading, int]:
    rng = random.Random(seed)
    limits = [f"limit_{i}" for i in range(10)]
    regimes: dict[str, list[tuple[float, LimitStatus]]] = {}
    changes = 0
    for limit_id in limits:
        t, level, path = 0.0, LimitStatus.OK, []
        while t < hours * 3600:
            path.append((t, level))
            t += rng.uniform(20 * 60, 60 * 60)
            nxt = rng.choice([s for s in LEVELS if s is not level])
            if t < hours * 3600:
                changes += 1
            level = nxt
        regimes[limit_id] = path

    def reading(_: int, limit_id: str, t: float) -> float | None:
        level = next(s for start, s in reversed(regimes[limit_id]) if start <= t)
        return LEVELS[level] + rng.gauss(0, 40)

    return limits, reading, changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--step", type=float, default=10.0, help="seconds between evaluations")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    defaults = alert_policy(Settings.model_validate({}))
    policies = {
        "no noise control (every control 0, the old defaults)": AlertPolicy(),
        f"default settings (keep_firing_for_s {defaults.keep_firing_for_s:g}, hysteresis "
        f"{defaults.hysteresis:g}, unknown_for_s {defaults.unknown_for_s:g})": defaults,
    }
    restarts = [6 * 3600.0, 12 * 3600.0, 18 * 3600.0]
    print(f"{args.hours:g} h simulated, one evaluation every {args.step:g} s, seed {args.seed}")
    print("| day | policy | Slack messages | per hour | real status changes |")
    print("|---|---|---:|---:|---:|")
    for name, policy in policies.items():
        limits, reading, changes = calm(args.seed)
        sent = run(policy, args.hours, args.step, limits, reading,
                   [r for r in restarts if r < args.hours * 3600])
        print(f"| calm | {name} | {sent} | {sent / args.hours:.2f} | {changes} |")
        limits, reading, changes = volatile(args.seed, args.hours)
        sent = run(policy, args.hours, args.step, limits, reading, [])
        print(f"| volatile | {name} | {sent} | {sent / args.hours:.2f} | {changes} |")


if __name__ == "__main__":
    main()
