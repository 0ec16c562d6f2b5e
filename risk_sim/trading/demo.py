"""``risk-sim demo --scenario <trading scenario>``: the desk trades while Risk Monitor watches.

Starts the simulators and ``risk-monitor serve`` (SQLite and no Redis unless
``RISK_MONITOR_DATABASE_URL`` / ``RISK_MONITOR_REDIS_URL`` name them), plays the scenario's
desk script, and prints the timeline of orders, CheckOrder decisions, fills, P&L and alerts as
it happens, then what the desk expected and whether it held. Files (settings, limits, the
service's log) go to ``.risk_monitor/trading/<scenario>/``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import click

from risk_sim.scenario import load_scenario
from risk_sim.trading.scenarios import SCRIPTS, Expectation
from risk_sim.trading.session import TradingSession


@dataclass
class TradingReport:
    scenario: str
    expectations: list[Expectation] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.expectations) and all(e.ok for e in self.expectations)


def is_trading_scenario(name: str) -> bool:
    return name in SCRIPTS or bool(load_scenario(name).meta.get("trading"))


async def play(name: str, workdir: Path, *, echo: bool = True,
               seed: int | None = None) -> TradingReport:
    script_name = str(load_scenario(name).meta.get("trading") or name)
    script = SCRIPTS[script_name]
    report = TradingReport(name)

    def printer(line: str) -> None:
        report.timeline.append(line)
        if echo:
            click.echo(line)

    session = TradingSession(name, workdir, printer=printer,
                             database_url=os.environ.get("RISK_MONITOR_DATABASE_URL"),
                             redis_url=os.environ.get("RISK_MONITOR_REDIS_URL"), seed=seed)
    async with session as rig:
        printer(f"simulators seeded with {rig.stack.seed}")
        report.expectations = await script(rig)
        diverged = [c for c in rig.comparisons if not c.ok]
        report.expectations.append(Expectation(
            "the monitor's positions and P&L matched the venues after every step",
            not diverged, f"{len(diverged)} of {len(rig.comparisons)} steps diverged, first: "
            f"{diverged[0].line()}" if diverged else f"{len(rig.comparisons)} steps"))
        await asyncio.sleep(1.0)  # let the last alerts of the session reach the timeline
    return report


def run_trading_demo(name: str, workdir: Path | None = None, *,
                     seed: int | None = None) -> TradingReport:
    """Play one trading scenario; ``seed`` overrides the scenario's (same seed, same run)."""
    folder = workdir or Path(".risk_monitor") / "trading" / name
    click.echo(f"risk-sim: trading scenario {name!r}; service files in {folder}")
    report = asyncio.run(play(name, folder, seed=seed))
    click.echo("")
    for expectation in report.expectations:
        mark = "ok  " if expectation.ok else "FAIL"
        click.echo(f"[{mark}] {expectation.name}" +
                   (f" ({expectation.detail})" if expectation.detail else ""))
    return report
