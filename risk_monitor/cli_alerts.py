"""``risk-monitor alerts``: acknowledge, silence, unsilence and list, straight on the store.

The CLI runs where the store's credentials are, so the operator names themselves with
``--author`` (or ``RISK_MONITOR_AUTHOR``); the REST and gRPC routes take the identity from the
caller's bearer token instead. Every change is audited by the store.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import click

from risk_monitor.cli import cli, opened_storage

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

author_option = click.option(
    "--author", envvar="RISK_MONITOR_AUTHOR", required=True,
    help="Who does this (env RISK_MONITOR_AUTHOR); recorded and audited.")


def parse_duration(text: str) -> timedelta:
    """``90m``, ``2h``, ``1.5d``, ``45s`` or plain seconds."""
    found = _DURATION.match(text)
    if found is None:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 30m, 2h, 1d)")
    return timedelta(seconds=float(found.group(1)) * _UNIT_S[found.group(2)])


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@cli.group("alerts")
def alerts() -> None:
    """Acknowledge and silence alerts (Alertmanager semantics; audited)."""


@alerts.command("ack")
@click.argument("key")
@author_option
@click.option("--comment", default="", help="Why, or what you are doing about it.")
@click.pass_context
def ack(ctx: click.Context, key: str, author: str, comment: str) -> None:
    """Acknowledge KEY (alert fingerprint or correlation id): its repeats stop until its
    status changes."""
    from risk_monitor.adapters.sql.alert_controls import acked_as_dict

    with opened_storage(ctx) as storage:
        done = storage.controls.acknowledge(key, by=author, comment=comment)
    click.echo(json.dumps(acked_as_dict(done)))


@alerts.command("silence")
@click.option("--match", "matchers", multiple=True, required=True,
              help='Label matcher: limit_id, scope, venue, severity or status with =, !=, =~ '
                   'or !~ (repeatable; all must match), e.g. --match venue=okx.')
@click.option("--duration", default=None, help="How long from the start: 30m, 2h, 1d.")
@click.option("--until", "until", default=None, help="End time (ISO 8601, UTC if no zone).")
@click.option("--start", default=None, help="Start time (ISO 8601); default now.")
@click.option("--comment", required=True, help="Why, and until what.")
@author_option
@click.pass_context
def silence(ctx: click.Context, matchers: tuple[str, ...], duration: str | None,
            until: str | None, start: str | None, comment: str, author: str) -> None:
    """Hold back notifications of matching alerts for a while (alerts are still recorded)."""
    from risk_monitor.adapters.sql.alert_controls import silence_as_dict
    from risk_monitor.domain.silences import silence_end

    starts_at = parse_time(start) if start else datetime.now(UTC)
    try:
        ends_at = silence_end(starts_at, ends_at=parse_time(until) if until else None,
                              duration=parse_duration(duration) if duration else None)
    except ValueError as exc:
        raise click.UsageError(f"{exc} (--duration or --until)") from exc
    with opened_storage(ctx) as storage:
        created = storage.controls.add_silence(list(matchers), starts_at=starts_at,
                                               ends_at=ends_at, created_by=author,
                                               comment=comment)
    click.echo(json.dumps(silence_as_dict(created, datetime.now(UTC))))


@alerts.command("unsilence")
@click.argument("silence_id")
@author_option
@click.pass_context
def unsilence(ctx: click.Context, silence_id: str, author: str) -> None:
    """End silence SILENCE_ID now."""
    from risk_monitor.adapters.sql.alert_controls import silence_as_dict

    with opened_storage(ctx) as storage:
        ended = storage.controls.expire_silence(silence_id, by=author)
    click.echo(json.dumps(silence_as_dict(ended, datetime.now(UTC))))


@alerts.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include ended and future silences.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_controls(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Active silences and the acknowledgements that still hold."""
    from risk_monitor.adapters.sql.alert_controls import acked_as_dict, silence_as_dict

    now = datetime.now(UTC)
    with opened_storage(ctx) as storage:
        silences = storage.controls.silences(active_at=None if show_all else now)
        acks = storage.controls.current_acknowledgements()
    body = {"silences": [silence_as_dict(s, now) for s in silences],
            "acknowledgements": [acked_as_dict(a) for a in acks]}
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    click.echo(f"silences ({len(silences)}):")
    for s in body["silences"]:
        matchers = " ".join(f'{m["name"]}{m["op"]}"{m["value"]}"' for m in s["matchers"])
        state = "active" if s["active"] else "inactive"
        click.echo(f"  {s['silence_id']}  {state:<8} until {s['ends_at']}  {matchers}  "
                   f"by {s['created_by']}: {s['comment']}")
    click.echo(f"acknowledgements ({len(acks)}):")
    for a in body["acknowledgements"]:
        click.echo(f"  {a['fingerprint']}  {a['status']:<7} {a['limit_id']} {a['scope']}  "
                   f"by {a['acked_by']} at {a['acked_at']}  {a['comment']}")
