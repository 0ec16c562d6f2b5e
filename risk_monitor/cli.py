"""The ``risk-monitor`` command: configuration checks, the service, and operator tools.

Heavy modules (Dagster, the service, adapters) are imported inside the commands that need
them, so ``risk-monitor --help`` and ``check-config`` answer at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from risk_monitor import __version__
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.logging import configure_logging, get_logger
from risk_monitor.project_env import (
    DAGSTER_HOME_ENV,
    load_project_env,
    read_env_file,
    write_project_env,
)

if TYPE_CHECKING:
    from risk_monitor.adapters.sql import Storage

log = get_logger(__name__)

DAGSTER_YAML = Path(__file__).resolve().parent.parent / "dagster.yaml"


class _Commands(click.Group):
    """Every command (and sub-group) fails the same way on our errors: the code and message,
    the key when there is one, exit 2; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RiskMonitorError as exc:
            click.echo(f"error: {exc}", err=True)
            key = getattr(exc, "key", None)  # a ConfigError's
            if key:
                click.echo(f"  key: {key}", err=True)
            sys.exit(2)


def ensure_dagster_home(home: str | None = None) -> Path:
    """Use ``home``, else DAGSTER_HOME, else ./.dagster_home, seeded with the embedded
    dagster.yaml."""
    path = Path(home or os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()
    path.mkdir(parents=True, exist_ok=True)
    target = path / "dagster.yaml"
    if not target.exists():
        if DAGSTER_YAML.exists():
            shutil.copyfile(DAGSTER_YAML, target)
        else:
            target.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(path)
    return path


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="risk-monitor")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              envvar="RISK_MONITOR_CONFIG", help="YAML settings file (env RISK_MONITOR_CONFIG).")
@click.option("--log-level", default=None, help="Override RISK_MONITOR_LOG_LEVEL.")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, log_level: str | None) -> None:
    """Risk Monitor: exposure, P&L and limit monitoring for crypto trading desks."""
    configure_logging(log_level)
    ctx.ensure_object(dict)
    ctx.obj["config_file"] = config_file


def _settings(ctx: click.Context) -> Any:
    from risk_monitor.platform.settings import load_settings

    return load_settings(ctx.obj.get("config_file"))


@cli.command("check-config")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.pass_context
def check_config(ctx: click.Context, fmt: str) -> None:
    """Validate the configuration and print it with secrets masked.

    Beyond the settings' own validation: the limits document (file or configuration service)
    loads, every venue is a ccxt exchange with the credentials it needs set, every limit is on
    a configured venue or custodian, data-age budgets exceed their poll intervals. One line per
    problem (file, key, fix) and exit code 1 when anything is wrong."""
    settings = _settings(ctx)
    data = settings.masked()
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False))
    from risk_monitor.config_checks import run_checks

    source = ctx.obj.get("config_file") or os.environ.get("RISK_MONITOR_CONFIG") \
        or "(environment and defaults)"
    problems = run_checks(settings, str(source))
    for problem in problems:
        click.echo(f"error: {problem.line()}", err=True)
    if problems:
        click.echo(f"configuration NOT OK: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo("configuration OK", err=True)


@cli.command("serve")
@click.option("--insecure", is_flag=True, default=False,
              help="Serve a non-loopback address without authentication (not for production).")
@click.pass_context
def serve(ctx: click.Context, insecure: bool) -> None:
    """Run the long-running service: REST + gRPC health, risk API, metrics, discovery."""
    settings = _settings(ctx)
    from risk_monitor.service.main import run_service

    run_service(settings, insecure=insecure)


@cli.group("audit")
def audit() -> None:
    """Follow alerts back to their data, limit configuration and code (compliance review)."""


def _storage(ctx: click.Context) -> Storage:
    """The store at the schema head, opened by the composition root (as every process does)."""
    from risk_monitor.bootstrap import build_runtime

    return build_runtime(_settings(ctx)).storage


@contextlib.contextmanager
def opened_storage(ctx: click.Context) -> Iterator[Storage]:
    """The store for one operator change, closed after."""
    storage = _storage(ctx)
    try:
        yield storage
    finally:
        storage.close()


@audit.command("trace")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--document", "with_documents", is_flag=True,
              help="Include the limit configuration document(s) in force.")
@click.option("--dagster/--no-dagster", "use_dagster", default=None,
              help="Look up hot-path alerts' events in the Dagster instance (default: when "
                   "DAGSTER_HOME is set).")
@click.pass_context
def audit_trace(ctx: click.Context, key: str, as_json: bool, with_documents: bool,
                use_dagster: bool | None) -> None:
    """Trace KEY: a correlation id, Slack message ts (or channel:ts), idempotency key, alert
    fingerprint or Dagster run id. Prints Slack message(s) -> alert episode -> evaluation ->
    each input's data version and as-of time -> limit configuration -> code version."""
    from risk_monitor.audit_trace import as_dict, trace

    episodes = trace(_storage(ctx), key, with_documents=with_documents)
    if not episodes:
        click.echo(f"no alert found for {key!r}", err=True)
        sys.exit(1)
    if use_dagster or (use_dagster is None and os.environ.get("DAGSTER_HOME")):
        import dagster as dg

        from risk_monitor.audit_trace import attach_dagster_events

        with dg.DagsterInstance.get() as instance:
            attach_dagster_events(episodes, instance, _settings(ctx).alerts.dagster_ui_url)
    if as_json:
        click.echo(json.dumps([as_dict(e) for e in episodes], indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for episode in episodes:
        console.rule(f"[bold]{episode.limit_id}[/] · {episode.scope} · {episode.correlation_id}")
        table = Table("seq", "kind", "status", "delivery", "detected", "notified",
                      "event→detect s", "detect→notify s", "slack / ref")
        for n in episode.notifications:
            table.add_row(str(n.sequence), n.kind, n.alert_status, n.delivery,
                          n.detected_at.isoformat(timespec="seconds"),
                          n.notified_at.isoformat(timespec="seconds") if n.notified_at else "",
                          _fmt_s(n.detect_latency_s), _fmt_s(n.notify_latency_s),
                          n.delivery_ref or (n.last_error or "")[:40])
        console.print(table)
        for d in episode.detections:
            origin = (f"Dagster run {d['run_id']} ({d.get('job_name') or '?'}) "
                      f"{d.get('dagster_run_url') or ''}" if d.get("run_id")
                      else f"service instance {d.get('instance_id')}")
            console.print(f"[bold]{d['event']}[/] {d['status']} at {d['at']} by {origin} "
                          f"(audit entry {d['audit_entry']} {str(d['entry_hash'])[:16]}…)")
            if d.get("dagster_event_url"):
                console.print(f"    Dagster event {d['dagster_event_url']}")
            if d.get("lineage_missing"):
                console.print(f"    [bold red]input versions {d['lineage_digest']} NOT FOUND[/] "
                              "(sealed by this entry): run `risk-monitor audit verify`")
            for item in d.get("inputs") or []:
                console.print(f"    input {item['input']}: data version {item['data_version']}"
                              f" as of {item.get('as_of') or '?'}"
                              + (f" (run {item['run_id']})" if item.get("run_id") else ""))
                for venue, part in (item.get("venues") or {}).items():
                    console.print(f"      {venue}: data version {part.get('data_version')}"
                                  f" as of {part.get('as_of') or '?'}, {part.get('rows')} rows")
            console.print(f"    limit configuration {d.get('config_version')}, "
                          f"code {d.get('code_version')}")
        for version, known in episode.config_versions.items():
            state = (f"source {known['source']}, applied {known['applied_at']}, document stored"
                     if known else "NOT FOUND in limit_config_versions")
            console.print(f"limit configuration {version}: {state}")
            if known and "document" in known:
                console.print_json(json.dumps(known["document"], default=str))


def _fmt_s(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@audit.command("recent")
@click.option("--limit", default=20, show_default=True)
@click.pass_context
def audit_recent(ctx: click.Context, limit: int) -> None:
    """The latest alert notifications with their correlation ids (start a trace from here)."""
    storage = _storage(ctx)
    for row, note in storage.outbox.recent(limit):
        click.echo(f"{row.detected_at.isoformat(timespec='seconds')}  {row.alert_status:<7} "
                   f"{row.kind:<11} {note.limit_id} {note.scope}  {row.status:<7} "
                   f"{row.correlation_id}")


@audit.command("verify")
@click.option("--anchors-file", "anchors_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="JSON-lines anchors written by `audit anchor` (repeatable).")
@click.option("--dagster/--no-dagster", "use_dagster", default=None,
              help="Compare with the heads Dagster runs recorded (default: when DAGSTER_HOME "
                   "is set).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def audit_verify(ctx: click.Context, anchors_files: tuple[Path, ...], use_dagster: bool | None,
                 as_json: bool) -> None:
    """Prove the audit trail was not edited: walk the hash chain, check every sealed row
    (alerts, notifications, compliance intervals, configuration versions), compare the head
    with the anchors kept outside the database. Exit 0 when intact, 1 when not, or when the
    store holds no audit entry at all (nothing proven)."""
    from risk_monitor.adapters.audit_anchors import read_file_anchors
    from risk_monitor.adapters.sql.audit_verify import verify
    from risk_monitor.dagster_catalog import read_dagster_anchors

    storage = _storage(ctx)
    anchors = [a for path in anchors_files for a in read_file_anchors(path)]
    if use_dagster or (use_dagster is None and os.environ.get("DAGSTER_HOME")):
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            anchors += read_dagster_anchors(instance)
    report = verify(storage.engine, anchors)
    # an empty chain proves nothing: most often the wrong database (a fresh file is created)
    empty = report.entries == 0 and report.rows_checked == 0 and report.ok
    if as_json:
        click.echo(json.dumps({
            "ok": report.ok and not empty, "empty": empty, "entries": report.entries,
            "legacy_entries": report.legacy_entries,
            "rows_checked": report.rows_checked, "anchors_checked": report.anchors_checked,
            "head": {"id": report.head.id, "hash": report.head.hash},
            "findings": [f.__dict__ for f in sorted(
                report.findings, key=lambda f: (f.entry_id is None, f.entry_id or 0))],
        }, indent=2))
    elif empty:
        click.echo("AUDIT TRAIL EMPTY: this store holds no audit entry, nothing was verified "
                   "(is RISK_MONITOR_DATABASE_URL the production store?)", err=True)
    elif report.ok:
        click.echo(f"audit chain intact: {report.entries} entries, {report.rows_checked} sealed "
                   f"rows, {report.anchors_checked} anchors matched")
        click.echo(f"head {report.head.id} {report.head.hash}")
    else:
        first = report.first
        assert first is not None
        click.echo(f"AUDIT TRAIL BROKEN: first broken entry: {first.describe()}", err=True)
        for finding in report.findings:
            if finding is not first:
                click.echo(f"  also: {finding.describe()}", err=True)
    if not report.ok or empty:
        sys.exit(1)


@audit.command("anchor")
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Append the chain head to this JSON-lines file (keep it off the database).")
@click.pass_context
def audit_anchor(ctx: click.Context, path: Path) -> None:
    """Record the audit chain's head outside the database (run it from cron every minute)."""
    import socket
    from datetime import UTC, datetime

    from risk_monitor.adapters.audit_anchors import append_file_anchor

    head = _storage(ctx).audit.head()
    append_file_anchor(path, head, source=f"cli@{socket.gethostname()}", at=datetime.now(UTC))
    click.echo(f"head {head.id} {head.hash}")


@cli.command("stream")
@click.option("--venue", "venues", multiple=True,
              help="Venue id to feed (repeatable); default: every configured venue.")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus /metrics on this port (0 = any free port).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Bind address of the metrics server.")
@click.pass_context
def stream(ctx: click.Context, venues: tuple[str, ...], metrics_port: int | None,
           metrics_host: str) -> None:
    """Run the market-data feed alone (websockets -> Redis quote cache) for some venues,
    registered in discovery as `market-stream` (shard the feed across processes)."""
    settings = _settings(ctx)
    from risk_monitor.service.feeder import main as run_feeder

    run_feeder(settings, list(venues), metrics_port=metrics_port, metrics_host=metrics_host)


@cli.command("dev", context_settings={"ignore_unknown_options": True})
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def dev(dagster_args: tuple[str, ...]) -> None:
    """Start the Dagster UI and daemon on the project's instance (wraps `dagster dev`);
    SIGINT or SIGTERM stops it and its children within seconds."""
    home = ensure_dagster_home()
    if DAGSTER_HOME_ENV not in read_env_file(Path.cwd() / ".env"):
        write_project_env(Path.cwd(), {DAGSTER_HOME_ENV: str(home)})  # dg / dagster find it too
    click.echo(f"DAGSTER_HOME={home}", err=True)
    from risk_monitor.defs.risk.automation import automation_state

    click.echo(f"sensors and schedule: {automation_state().reason}", err=True)
    beside = Path(sys.executable).with_name("dagster")  # the venv we run from, even if not on PATH
    dagster = str(beside) if beside.exists() else shutil.which("dagster") or "dagster"
    from risk_monitor.dev_server import run_supervised

    # a child, not exec: SIGINT/SIGTERM then stop the webserver, daemon and code servers
    sys.exit(run_supervised([dagster, "dev", "-m", "risk_monitor.definitions", *dagster_args]))


from risk_monitor import (  # noqa: E402  registers `risk-monitor alerts` and `... trading`
    cli_alerts,  # noqa: F401
    cli_trading,  # noqa: F401
)


def main() -> None:
    load_project_env()  # DAGSTER_HOME / RISK_MONITOR_CONFIG of this project (never overrides)
    cli(prog_name="risk-monitor")


if __name__ == "__main__":
    main()
