"""The settings sections of the long-running service and of trading state (``serve``): binds,
discovery, hot path cadence, authentication, TLS, stream rate limits, trading rules. Part of
the one settings object of ``platform/settings.py``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A settings section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ProbePath = Literal["/healthz", "/readyz", "/metrics"]
_OPEN_BY_DEFAULT: tuple[ProbePath, ...] = ("/healthz", "/readyz", "/metrics")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class AuthSettings(Section):
    """Bearer-token authentication of the REST API, the dashboard and gRPC metadata."""

    token_envs: list[str] = Field(
        default_factory=list, max_length=16,
        description="env vars each holding one accepted bearer token (two during a rotation); "
        "empty: authentication off, allowed only on loopback binds or with --insecure")
    open_paths: list[ProbePath] = Field(
        default_factory=lambda: list(_OPEN_BY_DEFAULT),
        description="probe endpoints answered without a token; leave one out to require a "
        "token for it")
    open_grpc_health: bool = Field(
        default=True, description="grpc.health.v1 answered without a token (orchestrator probes)")

    @field_validator("token_envs")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(_ENV_NAME, name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


class TlsSettings(Section):
    """TLS of the REST and gRPC listeners (PEM files, read at start)."""

    cert_file: Path = Field(description="server certificate chain (PEM)")
    key_file: Path = Field(description="private key of the certificate (PEM)")


class RateLimitSettings(Section):
    """Per-client limits on streaming RPCs (WatchAlerts, Health.Watch): token plus address."""

    max_streams_per_client: int = Field(
        default=8, ge=1, le=10_000, description="concurrent streams one client may hold open")
    stream_opens_per_minute: int = Field(
        default=60, ge=1, le=100_000, description="streams one client may open per minute "
        "(token bucket; bursts up to this many)")


class ServiceSettings(Section):
    """The long-running `risk-monitor serve` process."""

    service_name: str = Field(default="risk-monitor", description="discovery name")
    instance_id: str | None = Field(default=None, description="default hostname-pid")
    rest_host: str = Field(default="127.0.0.1", description="REST bind address")
    rest_port: int = Field(default=8080, ge=0, le=65535, description="0 = any free port")
    grpc_host: str = Field(default="127.0.0.1", description="gRPC bind address")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="0 = any free port")
    registry_ttl_s: float = Field(
        default=15.0, gt=0, description="discovery entry lifetime; heartbeat at a third")
    drain_s: float = Field(default=5.0, ge=0, description="graceful shutdown drain")
    registry_prefix: str = Field(default="svc", description="Redis key prefix of discovery")
    health_check_interval_s: float = Field(
        default=1.0, gt=0, description="how often dependencies are probed for health")
    hot_path: bool = Field(
        default=True,
        description="evaluate limits in-process on every quote and position change and alert "
        "at once (active when venues or custodians are configured)")
    stream: bool = Field(
        default=True,
        description="run the websocket quote feed in this process; false: follow the Redis "
        "quote streams written by `risk-monitor stream` feeders")
    positions_poll_s: float = Field(
        default=5.0, gt=0, description="hot path: exchange positions and balances poll interval")
    custody_poll_s: float = Field(
        default=20.0, gt=0, description="hot path: custodian balances poll interval")
    evaluate_min_interval_s: float = Field(
        default=0.25, ge=0, description="hot path: at most one full evaluation per interval "
        "(heartbeat, custody polls, ticks the per-tick evaluator hands on); ticks are decided at "
        "once, position changes and new limit documents are evaluated at once")
    persist_interval_s: float = Field(
        default=5.0, gt=0, description="hot path: limit results, metrics and compliance are "
        "written on every status change and at least this often")
    hot_path_warmup_s: float = Field(
        default=10.0, ge=0, description="hot path: longest wait at start for the first poll "
        "and quote of every source before evaluating (missing ones are then UNKNOWN)")
    switch_interval_ms: float = Field(
        default=0.05, gt=0, le=5.0, description="hot path: the interpreter's thread switch "
        "interval (sys.setswitchinterval) while the service runs; CPython's default is 5 ms, "
        "so a tick could wait that long behind the writer, a poll or a full evaluation "
        "(docs/benchmarks.md: 0.05 vs 0.5 ms)")
    durable_alert_commit: bool = Field(
        default=True, description="hot path: the alert transaction of a status change "
        "waits for its WAL flush (PostgreSQL synchronous_commit). false saves the flush "
        "(~1-5 ms per alert) at a cost: a PostgreSQL crash (not a service crash) can lose the "
        "last ~3 x wal_writer_delay of alert transactions; the service re-derives and "
        "re-alerts them on its next periodic write, and a status that moved and moved back "
        "inside that window is missing from the compliance timeline (docs/architecture.md)")
    hot_path_stale_s: float = Field(
        default=30.0, gt=0, description="hot path: readiness fails when no evaluation "
        "completed for this long")
    dispatch_alerts: bool = Field(
        default=True, description="deliver the alert outbox (Slack or the file sink) from "
        "this process")
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tls: TlsSettings | None = Field(default=None, description="TLS for REST and gRPC; absent: "
                                    "plaintext (loopback or behind a TLS-terminating proxy)")
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)


class TradingRuleSettings(Section):
    """One automatic trading-state rule: while a limit result matches, the scope goes to
    ``state``."""

    match: str = Field(description="limit kind or limit id; '*' = any")
    status: Literal["WARN", "BREACH", "UNKNOWN"] = Field(description="limit status that triggers")
    state: Literal["REDUCING", "HALTED"] = Field(description="trading state while it holds")
    per_venue: bool = Field(
        default=False, description="only venue-scoped results count, and they set that venue "
        "alone (a blind venue halts itself, not the desk)")


def _default_trading_rules() -> list[TradingRuleSettings]:
    return [
        TradingRuleSettings(match="daily_loss", status="BREACH", state="REDUCING"),
        TradingRuleSettings(match="drawdown", status="BREACH", state="REDUCING"),
        TradingRuleSettings(match="*", status="UNKNOWN", state="HALTED", per_venue=True),
    ]


class TradingSettings(Section):
    """Trading state (ACTIVE / REDUCING / HALTED) and the pre-trade gate."""

    rules: list[TradingRuleSettings] = Field(
        default_factory=_default_trading_rules,
        description="automatic transitions; default: daily_loss or drawdown BREACH -> "
        "REDUCING (desk), any UNKNOWN on a venue's scope -> HALTED (that venue)")
    halt_venue_on_source_failure: bool = Field(
        default=True, description="a venue whose exchange source failed is HALTED")
    refresh_s: float = Field(
        default=0.5, gt=0, description="how often the service re-reads manual states (set by "
        "the CLI or another instance) and audits automatic transitions")
    recent_orders: int = Field(
        default=500, ge=10, le=100_000, description="checked orders kept for the dashboard")
    pending_order_ttl_s: float = Field(
        default=5.0, gt=0, description="an allowed order counts as pending exposure in "
        "CheckOrder until the evaluated positions show it (its fills matched by client order "
        "id on the private streams, else positions as of after the allowance), at most this "
        "long: then it is released, logged (pending_orders_expired) and counted")
    desk_book_key: str = Field(
        default="rm:desk:book", description="Redis HASH where the trading client publishes "
        "the desk's expected book (adapters/redis_desk_book.py)")
    reconciliation_abs_tolerance: float = Field(
        default=1e-6, ge=0, description="a book difference below this (base units) is no break")
    reconciliation_rel_tolerance: float = Field(
        default=1e-4, ge=0, description="... nor below this fraction of the larger book")
    reconciliation_for_s: float = Field(
        default=10.0, ge=0, description="a reconciliation break (or a blind venue) alerts once "
        "it has lasted this long: a fill in flight between the desk's book and the venue's is "
        "no break (both the service and the Dagster asset apply it)")
    realised_abs_tolerance: float = Field(
        default=1.0, ge=0, description="rebuilt vs venue realised P&L: tolerated difference "
        "(settle currency)")
    realised_rel_tolerance: float = Field(
        default=1e-4, ge=0, description="... or this fraction of the venue's figure")
    private_streams: bool = Field(
        default=True, description="follow fills and positions through the venues' private "
        "websockets (ccxt.pro) where they have them (Binance USD-M user data, OKX "
        "orders/positions), so a fill's alert comes within a second; REST poll as fallback "
        "(at service.positions_poll_s while a venue has no live stream) and reconciliation")
    fill_rest_poll_s: float | None = Field(
        default=None, gt=0, description="REST read of positions behind the private stream "
        "(fallback and reconciliation); default: service.positions_poll_s")
