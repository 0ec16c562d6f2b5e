"""The ``risk-sim`` command: run the simulator stack, list scenarios, step a running stack.

``risk-sim up --scenario limit_breach --out ./sim`` starts every simulator on free loopback
ports, writes ``risk-monitor.yaml`` / ``risk-monitor.env`` / ``endpoints.json`` into ``--out``,
prints the endpoints and the control URL, and runs until SIGINT/SIGTERM. ``risk-sim step
--control URL`` applies the next step of that scenario from another shell. ``risk-sim demo``
plays a scenario through Risk Monitor's Dagster job on embedded defaults (``risk_sim.demo``).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

import click

from risk_sim.market import ClockMode
from risk_sim.scenario import ScenarioError, list_scenarios, load_scenario


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Loopback simulators of Binance USDⓈ-M, OKX, Fireblocks, Slack and the config service."""


@cli.command()
@click.option("--scenario", "scenario_name", default="calm", show_default=True,
              help="Packaged scenario name (see `risk-sim scenarios`) or a YAML path.")
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option("--clock", type=click.Choice(["manual", "realtime"]), default="realtime",
              show_default=True, help="manual: time moves only when stepped or advanced.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".risk_sim",
              show_default=True, help="Where to write risk-monitor.yaml/.env and endpoints.json.")
@click.option("--play/--no-play", default=False, show_default=True,
              help="Play the scenario's steps in real time right away.")
@click.option("--redis-url", default=None, help="Register the config service in Redis discovery.")
def up(*, scenario_name: str, seed: int | None, clock: str, out_dir: str, play: bool,
       redis_url: str | None) -> None:
    """Start every simulator and run until interrupted."""
    from risk_sim.launcher import SimulatorStack

    try:
        stack = SimulatorStack(scenario_name, seed=seed, clock=cast(ClockMode, clock),
                               redis_url=redis_url)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    stopping = threading.Event()

    def on_signal(signum: int, _: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with stack:
        paths = stack.write_config(out_dir)
        endpoints = stack.endpoints()
        click.echo(f"risk-sim: scenario {stack.scenario.name!r} (seed {stack.seed}, "
                   f"clock {clock}) is up")
        for name, value in endpoints.items():
            if isinstance(value, dict):
                click.echo(f"  {name:<15} {value.get('http', '')}  "
                           f"{value.get('ws', value.get('base_path', value.get('api_base', '')))}")
        click.echo(f"  {'control':<15} {stack.control_url}")
        for name, reason in stack.missing.items():
            click.echo(f"  {name:<15} NOT RUNNING: {reason}", err=True)
        click.echo(f"  settings: {paths['settings']}\n  secrets:  {paths['env']}\n"
                   f"  endpoints: {paths['endpoints']}")
        click.echo(f"Step it with: risk-sim step --control {stack.control_url}")
        sys.stdout.flush()
        if play:
            stack.play_in_background(realtime=True)
        while not stopping.wait(0.5):
            pass
        click.echo("risk-sim: stopping")


@cli.command()
def scenarios() -> None:
    """List the packaged scenarios."""
    for name in list_scenarios():
        scenario = load_scenario(name)
        click.echo(f"{name:<18} {len(scenario.steps)} steps  {scenario.description}")


def _call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - loopback URL
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read().decode(errors="replace")
        raise click.ClickException(f"{method} {url} -> {exc.code}: {payload}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None


@cli.command()
@click.option("--control", required=True, envvar="RISK_SIM_CONTROL",
              help="Control URL printed by `risk-sim up` (env RISK_SIM_CONTROL).")
def step(control: str) -> None:
    """Apply the next step of the running scenario."""
    record = _call(control.rstrip("/") + "/scenario/step", "POST", {})
    click.echo(f"step {record['index']}: {record['label']}")
    if record.get("expect"):
        click.echo(f"  expect: {json.dumps(record['expect'])}")


@cli.command()
@click.option("--control", required=True, envvar="RISK_SIM_CONTROL")
def state(control: str) -> None:
    """Print the simulators' truth as JSON."""
    click.echo(json.dumps(_call(control.rstrip("/") + "/scenario/state"), indent=2))


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(path: Path) -> None:
    """Validate a scenario file."""
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: ok ({scenario.name}, {len(scenario.steps)} steps)")


@cli.command()
@click.option("--scenario", "scenario_name", default="limit_breach", show_default=True,
              help="Packaged scenario name (see `risk-sim scenarios`) or a YAML path.")
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
def demo(*, scenario_name: str, seed: int | None) -> None:
    """Run a scenario through Dagster on embedded defaults and print the alerts and risk.

    Trading scenarios (active_trading, fat_finger, runaway_algo, venue_outage_while_trading)
    instead start `risk-monitor serve` and a simulated desk that asks CheckOrder before every
    order, and print the timeline of orders, decisions, fills, P&L and alerts.

    Starts the simulators, writes settings into .risk_monitor/demo/, runs the risk_cycle job
    once per scenario step on the ./.dagster_home instance (the one `risk-monitor dev` opens),
    and ends with the alerts raised and a risk summary. No server needed.
    """
    from risk_sim.trading.demo import is_trading_scenario, run_trading_demo

    try:
        if is_trading_scenario(scenario_name):  # the desk trades against `risk-monitor serve`
            if not run_trading_demo(scenario_name, seed=seed).ok:
                sys.exit(1)
            return
        from risk_sim.demo import run_demo

        report = run_demo(scenario_name, seed=seed)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    if not report.ok:
        sys.exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
