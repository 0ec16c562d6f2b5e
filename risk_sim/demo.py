"""``risk-sim demo``: the whole product on embedded defaults, offline, in about 20 seconds.

It starts the simulators in this process, writes Risk Monitor's settings into
``.risk_monitor/demo/`` (the generated secrets live only in this process's environment), uses
the Dagster instance ``risk-monitor dev`` uses (``$DAGSTER_HOME``, else ``./.dagster_home``
seeded with the repository's SQLite ``dagster.yaml``), and runs the ``risk_cycle`` job once per
scenario step, in-process against that instance, so the runs, materialisations and checks are
there for the UI afterwards. No Slack and no configuration service in the settings: alerts go to
the file sink (``.risk_monitor/demo/alerts.jsonl``) and the limits come from the packaged
``limits.yaml``. Logs go to ``.risk_monitor/demo/demo.log``; the terminal shows progress, then
the alerts raised and a risk summary, and nothing else: every log line, Dagster event and
library warning goes to the log file, on a terminal or piped.

Where the time goes (bench/bench_demo.py): imports (warmed in a thread while the simulators
start), and Dagster's SQLite event log, which commits every event on its own connection. The
definitions make the embedded instance commit without waiting for the disk
(``risk_monitor/defs/sqlite_instance.py``), for the demo as for every run on it.

This is the one module of ``risk_sim`` that drives ``risk_monitor``: it runs the product the way
an operator would (settings + the Dagster job), never reaching into its internals.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.spinner import Spinner
from rich.table import Table

from risk_sim.launcher import SLACK_TOKEN_ENV, SimulatorStack
from risk_sim.scenario import load_scenario

if TYPE_CHECKING:  # imported lazily at run time (the demo's start-up cost)
    import pandas as pd

    from risk_monitor.domain.engine import RiskReport

DEMO_DIR = Path(".risk_monitor") / "demo"
SETTINGS_FILE = "risk-monitor.yaml"
LOG_FILE = "demo.log"
ALERT_FILE = "alerts.jsonl"
JOB = "risk_cycle"
#: kept from the caller's environment (the log level, and the URL a PostgreSQL DAGSTER_HOME
#: needs); every other RISK_MONITOR_* variable would override the demo's settings file, and the
#: demo runs on embedded defaults whatever the shell exports
KEEP_ENV = ("RISK_MONITOR_LOG_LEVEL", "RISK_MONITOR_DAGSTER_PG_URL")
#: a step line names at most this many alerts, else counts them by state
MAX_LISTED_ALERTS = 3
#: imported in a thread while the simulators start (the first run would pay for them);
#: ``module:function`` also calls the function (the adapters' narrow SDK imports: importing
#: the whole ``fireblocks`` package alone costs ~3 s of CPU)
WARM_MODULES = ("risk_monitor.definitions", "risk_monitor.adapters.ccxt_client:load_sdk",
                "risk_monitor.adapters.fireblocks_custodian:load_sdk")
#: how often the progress display reads the current run's step events (each read is an event
#: log query on the demo's SQLite instance: at 0.5 s the watcher took ~6 % of the demo's CPU)
WATCH_INTERVAL_S = 1.0
STATUS_STYLE = {"OK": "green", "RESOLVED": "green", "WARN": "yellow", "BREACH": "bold red",
                "UNKNOWN": "magenta", "SUCCESS": "green", "FAILURE": "bold red"}


@dataclass
class StepReport:
    index: int
    label: str
    run_id: str
    status: str  # SUCCESS / FAILURE
    seconds: float
    new_alerts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DemoReport:
    scenario: str
    steps: list[StepReport]
    alerts: list[dict[str, Any]]
    alert_file: Path
    log_file: Path
    settings_file: Path
    dagster_home: Path
    summary: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.status == "SUCCESS" for s in self.steps)


# -- plumbing ----------------------------------------------------------------------------------
@contextlib.contextmanager
def logs_to(path: Path) -> Iterator[None]:
    """Send every log line, Dagster event and warning to ``path`` while the demo runs.

    Two layers, because either alone leaks: the JSON log handler writes to the file itself,
    and file descriptor 2 points at the file (Dagster's console logger, library warnings,
    anything a C extension prints). The terminal keeps stdout: progress and summary only.
    """
    from risk_monitor.platform.logging import configure_logging

    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
        configure_logging(stream=log)
        logging.captureWarnings(True)  # warnings become log lines in the file, once each
        try:
            yield
        finally:
            log.flush()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logging.captureWarnings(False)
            configure_logging(force=True)


def warm_imports(modules: tuple[str, ...] = WARM_MODULES) -> threading.Event:
    """Import what the first run needs in a thread, while the simulators start; the event is
    set once the first module (the Dagster definitions) is in, the rest keep loading beside
    the first run."""
    definitions_loaded = threading.Event()

    def load() -> None:
        try:
            for entry in modules:
                name, _, function = entry.partition(":")
                try:
                    module = importlib.import_module(name)
                    if function:
                        getattr(module, function)()
                except ImportError:  # the run reports a missing module properly
                    logging.getLogger(__name__).warning("demo: could not pre-import %s", name)
                definitions_loaded.set()
        finally:
            definitions_loaded.set()

    threading.Thread(target=load, name="demo-warm-imports", daemon=True).start()
    return definitions_loaded


def spinner(console: Console, text: str) -> Live:
    """A transient spinner that leaves stdout and stderr alone (rich's ``console.status``
    redirects ``sys.stderr`` into the terminal while it spins)."""
    return Live(Spinner("dots", text=text), console=console, transient=True,
                refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)


def demo_environment(secrets: dict[str, str], settings_file: Path) -> None:
    """This process's environment: the settings file and the simulators' secrets, nothing
    else of Risk Monitor's (the demo's own process; restored by exiting)."""
    for name in list(os.environ):
        if name.startswith("RISK_MONITOR_") and name not in KEEP_ENV:
            del os.environ[name]
    os.environ.update(secrets)
    os.environ["RISK_MONITOR_CONFIG"] = str(settings_file)


def demo_settings(stack: SimulatorStack, demo_dir: Path) -> dict[str, Any]:
    """The launcher's settings minus Slack and the configuration service (embedded defaults:
    file sink, packaged limits), with the state under the demo directory."""
    document = stack.settings_document()
    document.pop("slack", None)
    document.pop("config_service", None)
    document["environment"] = "demo"
    document["data_dir"] = str(demo_dir.resolve())
    # each 10 s step is played in one run, back to back: the timed noise controls (minutes of
    # desk time) would hold the resolve past the demo's end, so the demo turns them off
    document["alerts"] = {"keep_firing_for_s": 0, "unknown_for_s": 0}
    # the simulators stop with the demo: `risk-monitor dev` on these settings shows the demo's
    # runs and must not bury them under fail-closed runs of the schedule and sensors
    document["automation"] = "off"
    return document


def read_alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def alert_state(alert: dict[str, Any]) -> str:
    return "RESOLVED" if alert.get("kind") == "resolved" else str(alert.get("status"))


def _number(value: Any, digits: int = 0) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(number):
        return "—"
    return f"{number:,.{digits}f}"


def value_vs_limit(alert: dict[str, Any]) -> str:
    value, breach = alert.get("value"), alert.get("breach_level")
    utilisation = alert.get("utilisation")
    share = f" ({float(utilisation):.0%})" if isinstance(utilisation, int | float) \
        and math.isfinite(utilisation) else ""
    reference = value if isinstance(value, int | float) and math.isfinite(value) else breach
    digits = 0 if isinstance(reference, int | float) and abs(reference) >= 100 else 2
    return f"{_number(value, digits)} / {_number(breach, digits)}{share}"


class RunWatcher:
    """Shows which asset the current run is materialising (polls the run's event log)."""

    def __init__(self, progress: Progress, task: Any, steps: int, instance: Any) -> None:
        self.progress = progress
        self.instance = instance  # the demo's own: a second instance costs ~3 % of the demo's CPU
        self.task = task
        self.steps = steps
        self.run_id: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-watcher", daemon=True)

    def start(self) -> RunWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        import dagster as dg

        while not self._stop.wait(WATCH_INTERVAL_S):
            run_id = self.run_id
            if run_id is None:
                continue
            try:
                started = self.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
            except Exception:  # noqa: S112 - a display nicety: never disturb the run
                continue
            if started:
                asset = started[-1].step_key or ""
                self.progress.update(self.task, detail=f"{len(started)}/{self.steps} {asset}")


def risk_summary(result: Any) -> dict[str, Any]:
    """:func:`summary_tables` of the last run's evaluation, recomputed by the pure domain from
    the inputs that run collected (same inputs, same numbers)."""
    from risk_monitor.application import merge_collected
    from risk_monitor.domain.engine import RiskSnapshot, evaluate

    state = result.output_for_node("portfolio_pnl")
    snapshot = RiskSnapshot(
        positions=result.output_for_node("exchange_positions"),
        balances=merge_collected(result.output_for_node("exchange_balances"),
                                 result.output_for_node("custodian_balances")),
        prices=result.output_for_node("market_prices"),
        now=state.freshness.now,
        start_of_day_equity=state.portfolio.start_of_day_equity_usd,
        peak_equity=state.portfolio.peak_equity_usd,
        max_age_s=state.freshness.max_age_s,
        max_future_skew_s=state.freshness.max_future_skew_s,
        expected_venues=tuple(sorted(state.expected_venues)),
    )
    return summary_tables(evaluate(snapshot, result.output_for_node("limit_config")))


def summary_tables(report: RiskReport, top: int = 10) -> dict[str, pd.DataFrame]:
    """The small tables the demo's risk summary shows: headline, top exposures, limit
    utilisation."""
    import pandas as pd

    from risk_monitor.domain.engine import results_frame

    p, ex = report.portfolio, report.exposures
    portfolio = ex[ex["level"] == "portfolio"].iloc[0]
    headline = pd.DataFrame(
        [("compliance", report.summary.compliance.status.value),
         ("equity_usd", _num(p.equity_usd)), ("daily_pnl_usd", _num(p.daily_pnl_usd)),
         ("drawdown_pct", _num(p.drawdown_pct, 2)),
         ("gross_usd", _num(report.summary.gross_usd)), ("net_usd", _num(report.summary.net_usd)),
         ("leverage", _num(float(portfolio["leverage"]), 2)),
         ("positions", str(len(report.position_pnl))), ("config_version", report.config_version)],
        columns=["measure", "value"],
    )
    assets = ex[ex["level"] == "asset"].sort_values("gross_usd", ascending=False,
                                                    na_position="first")
    top_exposures = assets[["asset", "gross_usd", "net_usd", "holdings_usd", "concentration_pct",
                            "ok"]].head(top)
    venues = ex[ex["level"] == "venue"][["venue", "gross_usd", "net_usd", "equity_usd",
                                         "leverage", "ok"]]
    limits = results_frame(report.results)[
        ["limit_id", "scope", "status", "value", "unit", "utilisation_pct", "reason"]].head(top)
    return {"headline": headline, "top_exposures": top_exposures.reset_index(drop=True),
            "venues": venues.reset_index(drop=True),
            "limit_utilisation": limits.reset_index(drop=True)}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or not math.isfinite(value):
        return "UNKNOWN"
    return f"{value:,.{digits}f}"


# -- the demo ----------------------------------------------------------------------------------
def run_demo(scenario: str = "limit_breach", *, seed: int | None = None,
             workdir: Path | None = None, console: Console | None = None) -> DemoReport:
    """Play ``scenario`` through Dagster on embedded defaults and print what happened."""
    console = console or Console()
    loaded = load_scenario(scenario)  # a bad name or file fails before anything is touched
    root = (workdir or Path.cwd()).resolve()
    demo_dir = root / DEMO_DIR
    if demo_dir.exists():  # a fresh alert store and sink per demo; Dagster keeps its history
        shutil.rmtree(demo_dir)
    demo_dir.mkdir(parents=True)
    log_file = demo_dir / LOG_FILE
    settings_file = demo_dir / SETTINGS_FILE
    alert_file = demo_dir / ALERT_FILE

    steps: list[StepReport] = []
    summary: dict[str, Any] | None = None
    dagster_home = root / ".dagster_home"
    console.rule(f"[bold]Risk Monitor demo[/] · scenario [cyan]{loaded.name}[/]")
    with logs_to(log_file), warnings.catch_warnings():
        warming = warm_imports()
        stack = SimulatorStack(loaded, seed=seed, clock="manual", control=False)
        try:
            with spinner(console, "starting the simulators (Binance, OKX, Fireblocks)…"):
                stack.start()
            secrets = {k: v for k, v in stack.env().items() if k != SLACK_TOKEN_ENV}
            settings_file.write_text(
                "# Written by `risk-sim demo`: Risk Monitor settings for the simulators it\n"
                "# started (gone once it ended). Secrets were only in the demo's environment.\n"
                + yaml.safe_dump(demo_settings(stack, demo_dir), sort_keys=False))
            demo_environment(secrets, settings_file)
            from risk_monitor.cli import ensure_dagster_home
            from risk_monitor.project_env import CONFIG_ENV, DAGSTER_HOME_ENV, write_project_env

            dagster_home = ensure_dagster_home(
                os.environ.get("DAGSTER_HOME") or str(root / ".dagster_home"))
            # dg, dagster, risk-monitor dev and audit meet on this instance and store
            write_project_env(root, {DAGSTER_HOME_ENV: str(dagster_home),
                                     CONFIG_ENV: str(settings_file)})
            console.print(f"simulators up · settings [dim]{settings_file}[/] · "
                          f"DAGSTER_HOME [dim]{dagster_home}[/]")
            steps, last_result = _play(stack, console, alert_file, loaded.name, warming)
            if last_result is not None and last_result.success:
                try:
                    summary = risk_summary(last_result)
                except Exception as exc:  # the summary is a view; the runs are the record
                    console.print(f"[yellow]risk summary unavailable: {exc}[/]")
        finally:
            stack.stop()
    report = DemoReport(scenario=loaded.name, steps=steps, alerts=read_alerts(alert_file),
                        alert_file=alert_file, log_file=log_file, settings_file=settings_file,
                        dagster_home=dagster_home, summary=summary)
    print_report(report, console)
    return report


def _play(stack: SimulatorStack, console: Console, alert_file: Path, scenario: str,
          definitions_loaded: threading.Event) -> tuple[list[StepReport], Any]:
    with spinner(console, "loading the Dagster definitions…"):
        definitions_loaded.wait()
        import dagster as dg

        from risk_monitor.definitions import defs

        job = defs().resolve_job_def(JOB)
    total = len(stack.scenario.steps)
    steps: list[StepReport] = []
    last_result: Any = None
    progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                        TimeElapsedColumn(), console=console, transient=True,
                        redirect_stdout=False, redirect_stderr=False)
    with progress, dg.DagsterInstance.get() as instance:
        task = progress.add_task("scenario", total=total, detail="")
        watcher = RunWatcher(progress, task, len(job.graph.nodes), instance).start()
        try:
            while True:
                record = stack.player.step()
                if record is None:
                    break
                index, label = int(record["index"]), str(record["label"])
                run_id = str(uuid.uuid4())
                progress.update(task, description=f"step {index}/{total}: {label}",
                                detail="starting run")
                watcher.run_id = run_id
                seen = len(read_alerts(alert_file))
                started = time.monotonic()
                result = job.execute_in_process(
                    instance=instance, run_id=run_id, raise_on_error=False,
                    tags={"risk_monitor/trigger": "demo", "risk_monitor/scenario": scenario,
                          "risk_monitor/step": str(index)})
                watcher.run_id = None
                last_result = result
                new = read_alerts(alert_file)[seen:]
                step = StepReport(index, label, run_id, "SUCCESS" if result.success
                                  else "FAILURE", time.monotonic() - started, new)
                steps.append(step)
                progress.advance(task)
                progress.console.print(_step_line(step, total))
        finally:
            watcher.stop()
    return steps, last_result


def _step_line(step: StepReport, total: int) -> str:
    mark = "[green]✔[/]" if step.status == "SUCCESS" else "[bold red]✘[/]"
    if len(step.new_alerts) > MAX_LISTED_ALERTS:  # an outage touches many limits: count them
        counts = Counter(alert_state(a) for a in step.new_alerts)
        alerts = f"{len(step.new_alerts)} new alerts (" + ", ".join(
            f"[{STATUS_STYLE.get(state, 'white')}]{n} {state}[/]"
            for state, n in counts.most_common()) + ")"
    else:
        alerts = ", ".join(f"[{STATUS_STYLE.get(alert_state(a), 'white')}]{alert_state(a)}[/] "
                           f"{a['limit_id']}" for a in step.new_alerts) or "no new alerts"
    return (f"{mark} step {step.index}/{total} {step.label} · run {step.run_id[:8]} "
            f"[{STATUS_STYLE[step.status]}]{step.status}[/] in {step.seconds:.1f} s · {alerts}")


# -- the final report ----------------------------------------------------------------------------
def _frame_table(title: str, frame: Any, *, drop: tuple[str, ...] = ()) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    columns = [c for c in frame.columns if c not in drop]
    for column in columns:
        table.add_column(str(column), overflow="fold")
    for row in frame[columns].itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append(_number(value, 2 if abs(value) < 100 else 0))
            else:
                text = str(value)
                style = STATUS_STYLE.get(text)
                cells.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(*cells)
    return table


def print_report(report: DemoReport, console: Console) -> None:
    console.rule("[bold]Alerts raised")
    if report.alerts:
        table = Table(header_style="bold")
        for column in ("time (UTC)", "status", "limit", "scope", "value / limit"):
            table.add_column(column, overflow="fold")
        for alert in report.alerts:
            state = alert_state(alert)
            detected = str(alert.get("detected_at", ""))
            with contextlib.suppress(ValueError):
                detected = datetime.fromisoformat(detected).strftime("%H:%M:%S")
            table.add_row(detected, f"[{STATUS_STYLE.get(state, 'white')}]{state}[/]",
                          str(alert["limit_id"]), str(alert["scope"]), value_vs_limit(alert))
        console.print(table)
    else:
        console.print("no alerts were raised")
    if report.summary:
        console.rule("[bold]Risk summary (last evaluation)")
        titles = {"headline": "Headline", "top_exposures": "Top exposures",
                  "venues": "Venues", "limit_utilisation": "Limit utilisation (worst first)"}
        for key, title in titles.items():
            frame = report.summary.get(key)
            if frame is not None and len(frame):
                console.print(_frame_table(title, frame, drop=("reason",)))
    console.rule()
    failed = [s for s in report.steps if s.status != "SUCCESS"]
    if failed:
        console.print(f"[bold red]{len(failed)} run(s) failed[/]: "
                      + ", ".join(s.run_id for s in failed) + f" — see {report.log_file}")
    console.print(f"alerts file:      {report.alert_file}")
    console.print(f"logs:             {report.log_file}")
    console.print(f"Dagster instance: {report.dagster_home} "
                  f"({len(report.steps)} {JOB} runs, tag risk_monitor/trigger=demo)")
    console.print("next, from this directory (.env points every tool at this instance):")
    console.print("  [bold]risk-monitor audit recent[/]   the demo's alerts; then "
                  "[bold]risk-monitor audit trace <correlation id>[/]")
    console.print("  [bold]risk-monitor dev[/]            the Dagster UI at "
                  "http://127.0.0.1:3000 with the demo's assets, checks and runs")
