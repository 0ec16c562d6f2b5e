"""``risk-monitor trading``: show, halt, reduce and resume trading, straight on the store.

Like ``risk-monitor alerts``, the CLI runs where the store's credentials are and the operator
names themselves with ``--author`` (or ``RISK_MONITOR_AUTHOR``); every change is audited. Running
services pick a change up within ``trading.refresh_s`` (REST and gRPC apply it at once).
SCOPE is ``global`` (default) or ``venue:<id>``.
"""

from __future__ import annotations

import json

import click

from risk_monitor.cli import cli, opened_storage
from risk_monitor.cli_alerts import author_option


def _set(ctx: click.Context, scope: str, state: str, author: str, reason: str) -> None:
    from risk_monitor.adapters.sql.trading_states import SqlTradingStates

    with opened_storage(ctx) as storage:
        done = SqlTradingStates(storage.engine).set(scope, state, by=author, reason=reason)
    click.echo(json.dumps({"scope": scope, "state": done.state.value, "changed_by": author,
                           "reason": reason}))


@cli.group("trading")
def trading() -> None:
    """Trading state: ACTIVE, REDUCING (only reducing orders pass), HALTED (nothing passes)."""


@trading.command("state")
@click.pass_context
def state(ctx: click.Context) -> None:
    """The manual trading states on record (automatic ones follow the data: see the service's
    GET /v1/trading/state)."""
    from risk_monitor.adapters.sql.trading_states import SqlTradingStates

    with opened_storage(ctx) as storage:
        click.echo(json.dumps({"manual": SqlTradingStates(storage.engine).rows()}, default=str))


def _change(name: str, target: str, help_text: str) -> None:
    @trading.command(name, help=help_text)
    @click.argument("scope", default="global")
    @author_option
    @click.option("--reason", default="", help="Why; recorded in the audit log.")
    @click.pass_context
    def command(ctx: click.Context, scope: str, author: str, reason: str) -> None:
        _set(ctx, scope, target, author, reason)


_change("halt", "HALTED", "Halt SCOPE (global or venue:<id>): CheckOrder denies every order.")
_change("reduce", "REDUCING", "Put SCOPE in REDUCING: only orders that reduce a position pass.")
_change("resume", "ACTIVE", "Clear SCOPE's manual state (automatic rules still apply).")
