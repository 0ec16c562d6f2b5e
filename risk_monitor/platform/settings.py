"""One typed settings object, from a YAML file plus environment variables, validated at start.

Precedence (highest first): explicit overrides, environment (``RISK_MONITOR_*``, nested with
``__``, e.g. ``RISK_MONITOR_ALERTS__REPEAT_INTERVAL_S=600``), the YAML file named by
``RISK_MONITOR_CONFIG``, defaults. Secrets never live here: the settings name the environment
variable that holds each secret (``*_env``) and :meth:`Settings.secret` resolves it, registering
the value for log redaction. A bad value raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import os
import re
import socket
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from risk_monitor.platform.errors import ConfigError, ProductionPurityError
from risk_monitor.platform.logging import register_secret
from risk_monitor.platform.purity import (
    SANDBOX_OPTION_REFUSED,
    enforce_production_purity,
    sandbox_option,
)
from risk_monitor.platform.settings_service import (
    Section,
    ServiceSettings,
    TradingSettings,
)

CONFIG_FILE_ENV = "RISK_MONITOR_CONFIG"
#: the file ``load_settings`` was given, ahead of the environment's (no process-wide change)
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("risk_monitor_config_file", default=None)
_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class VenueSettings(Section):
    """One exchange account read through ccxt."""

    #: ccxt credential field -> the key here naming the environment variable that holds it
    CCXT_CREDENTIALS: ClassVar[dict[str, str]] = {
        "apiKey": "api_key_env", "secret": "secret_env", "password": "password_env"}

    id: str = Field(pattern=_ID, description="venue id used in every dataset, e.g. 'binance'")
    exchange: str = Field(pattern=r"^[a-z0-9]+$", description="ccxt exchange id, e.g. 'binanceusdm'")
    account: str = Field(default="main", pattern=_ID, description="account id within the venue")
    api_key_env: str | None = Field(default=None, description="env var holding the API key")
    secret_env: str | None = Field(default=None, description="env var holding the API secret")
    password_env: str | None = Field(default=None, description="env var holding the passphrase")
    endpoint_override: str | None = Field(
        default=None,
        description="REST base URL replacing the venue's production host (simulators, proxies); "
        "logged and shown in metadata")
    ws_endpoint_override: str | None = Field(default=None, description="websocket base URL override")
    symbols: list[str] = Field(default_factory=list, description="unified symbols to price")
    options: dict[str, Any] = Field(default_factory=dict, description="extra ccxt options")
    enable_rate_limit: bool = Field(default=True, description="ccxt client-side rate limiter")
    timeout_ms: int = Field(default=10_000, ge=500, le=120_000, description="per-call timeout")

    @field_validator("options")
    @classmethod
    def _no_sandbox(cls, value: dict[str, Any]) -> dict[str, Any]:
        option = sandbox_option(value)
        if option is not None:  # pydantic fills plain {placeholders} only: no !r here
            raise PydanticCustomError("production_purity",
                                      "option '{option}' " + SANDBOX_OPTION_REFUSED,
                                      {"option": option})
        return value


class CustodianSettings(Section):
    """One custodian workspace (Fireblocks)."""

    id: str = Field(default="fireblocks", pattern=_ID, description="custodian id in datasets")
    kind: Literal["fireblocks"] = Field(default="fireblocks", description="custodian API")
    api_key_env: str = Field(
        default="RISK_MONITOR_FIREBLOCKS_API_KEY", description="env var holding the API key")
    secret_key_env: str = Field(
        default="RISK_MONITOR_FIREBLOCKS_SECRET_KEY",
        description="env var holding the RSA private key (PEM)")
    endpoint_override: str | None = Field(
        default=None, description="API base URL incl. /v1 replacing https://api.fireblocks.io/v1")
    vault_account_ids: list[str] | None = Field(default=None, description="None reads every vault")
    page_size: int = Field(default=200, ge=1, le=500, description="vault accounts per page")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="per-call timeout")


class MarketDataSettings(Section):
    """Where quotes come from and how old they may be."""

    source: Literal["auto", "redis", "rest"] = Field(
        default="auto",
        description="auto: the Redis snapshot when redis_url is set, else REST snapshots")
    key_prefix: str = Field(default="rm:md", description="Redis key prefix of the quote cache")
    stream_maxlen: int = Field(default=100_000, ge=100, description="approximate cap of the quote stream")
    max_age_s: float = Field(default=60.0, gt=0, description="freshness budget of a quote")
    max_future_skew_s: float = Field(default=5.0, ge=0, description="tolerated clock skew")
    max_deviation: float = Field(
        default=0.25, gt=0, description="price sanity gate: a quote further than this fraction "
        "from its own fields or other venues is refused (its limits become UNKNOWN)")
    exchange_max_age_s: float = Field(
        default=60.0, gt=0, description="freshness budget of exchange positions and balances "
        "(must exceed service.positions_poll_s)")
    custody_max_age_s: float = Field(
        default=120.0, gt=0, description="freshness budget of custodian balances (must exceed "
        "service.custody_poll_s)")
    poll_interval_s: float = Field(default=2.0, gt=0, description="REST fallback poll interval")
    reconnect_initial_s: float = Field(default=0.5, gt=0, description="first websocket reconnect delay")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="longest reconnect delay")


class ResilienceSettings(Section):
    """Timeouts, retries and circuit breakers for every outbound call."""

    timeout_s: float = Field(default=10.0, gt=0, le=120, description="per-call timeout")
    max_attempts: int = Field(default=4, ge=1, le=20, description="attempts for retryable errors")
    backoff_initial_s: float = Field(default=0.2, gt=0, description="first retry delay")
    backoff_max_s: float = Field(default=5.0, gt=0, description="longest retry delay")
    breaker_fail_max: int = Field(default=5, ge=1, description="failures that open a breaker")
    breaker_reset_s: float = Field(default=30.0, gt=0, description="open time before a trial call")


class SlackRoute(Section):
    """One node of the routing tree (Alertmanager's ``route``): an alert whose labels match
    every matcher goes to ``channel`` (unset: the parent's); ``continue`` lets the next sibling
    routes match too. Labels: limit_id, scope, venue, severity, status, group, kind."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    matchers: list[str] = Field(
        min_length=1, description='label matchers, all must match: venue="okx", '
        'severity!="info", limit_id=~"btc_.*"')
    channel: str | None = Field(default=None,
                                description="Slack channel of this route (unset: the parent's)")
    continue_: bool = Field(default=False, alias="continue",
                            description="after a match, try the next sibling routes too")
    routes: list[SlackRoute] = Field(default_factory=list, description="child routes")

    @field_validator("channel")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        """A blank channel would route alerts nowhere: say so, not "should match pattern"."""
        if value is not None and not value.strip():
            raise ValueError("must name a Slack channel, e.g. '#desk-risk' (omit it to use "
                             "the parent route's channel)")
        return value


class SlackSettings(Section):
    """Slack delivery; absent means alerts go to the file/log sink."""

    token_env: str = Field(
        default="RISK_MONITOR_SLACK_TOKEN", description="env var holding the bot token")
    base_url: str | None = Field(
        default=None, description="Web API base URL override, must end with '/api/'")
    channels: dict[Severity, str] = Field(
        description="channel per alert severity",
        default_factory=lambda: {
            Severity.INFO: "#risk-info",
            Severity.WARNING: "#risk-alerts",
            Severity.CRITICAL: "#risk-critical",
        })
    routes: list[SlackRoute] = Field(
        default_factory=list,
        description="routing tree under the default route (`channels` by severity), as in "
        "Alertmanager: first matching route wins unless it sets `continue`")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="per-call timeout")
    max_concurrency: int = Field(default=4, ge=1, le=64, description="parallel posts")

    @field_validator("base_url")
    @classmethod
    def _trailing_slash(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith("/"):
            raise ValueError("must end with '/', e.g. http://127.0.0.1:8080/api/")
        return value


class AlertmanagerSettings(Section):
    """An Alertmanager that receives every alert too (beside Slack), through its v2 API, so
    alerts reach PagerDuty or Opsgenie with the routing a firm already runs."""

    url: str = Field(description="Alertmanager base URL, e.g. http://alertmanager:9093")
    token_env: str | None = Field(
        default=None, description="env var holding a bearer token (none: no Authorization)")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="per-request timeout")
    resend_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="a firing alert is pushed again this often (Alertmanager resolves an alert "
        "that is not re-sent before its endsAt, set to 4 x this ahead)")
    backfill_s: float = Field(
        default=3600.0, ge=0, description="at start, states raised up to this long ago are "
        "synced; older history is not replayed")
    poll_s: float = Field(default=1.0, gt=0, le=60, description="how often the sink looks for "
                          "new states")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")


class AlertSettings(Section):
    """Alert lifecycle timing (Alertmanager semantics) and where alerts go."""

    group_wait_s: float = Field(
        default=0.0, ge=0, description="a new alert is sent once it has lasted this long")
    repeat_interval_s: float = Field(
        default=3600.0, gt=0, description="re-notify a still-firing alert after this")
    send_resolved: bool = Field(default=True, description="notify when an alert clears")
    keep_firing_for_s: float = Field(
        default=120.0, ge=0,
        description="a notified episode resolves only after this long OK (a flapping source "
        "stays one episode); per limit in the limits YAML")
    hysteresis: float = Field(
        default=0.05, ge=0, lt=1,
        description="a notified WARN/BREACH clears only once the value is this fraction of the "
        "breach level past its level; per limit in the limits YAML")
    unknown_for_s: float = Field(
        default=30.0, ge=0,
        description="an UNKNOWN episode pages only once it has lasted this long (one missed "
        "poll is no page)")
    warn_for_s: float = Field(
        default=0.0, ge=0,
        description="a WARN episode pages only once it has lasted this long (a BREACH never "
        "waits for it); 0: a WARN pages on its first reading")
    warmup_grace_s: float | None = Field(
        default=None, ge=0,
        description="after a start, an UNKNOWN that only sources not answered since the start "
        "explain is not paged for at most this long; default the slowest poll interval plus "
        "the quote data-age budget")
    file_sink_path: Path | None = Field(
        default=None, description="JSON-lines sink when Slack is not configured")
    dagster_ui_url: str = Field(
        default="http://127.0.0.1:3000", description="base of the run/asset links in alerts")
    dashboard_url: str | None = Field(
        default=None, description="the risk dashboard as the desk reaches it (e.g. "
        "https://risk.example/dashboard); every alert links to it with ?alert=<correlation id>")
    outbox_batch_size: int = Field(default=100, ge=1, description="notifications per dispatch")
    outbox_max_attempts: int = Field(
        default=1000, ge=1, description="delivery attempts before giving up")
    outbox_lease_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="a claimed notification is re-claimable after this; before re-posting, "
        "the earlier post is looked up and adopted (no duplicate)")
    retry_initial_s: float = Field(
        default=1.0, gt=0, description="first delivery retry delay (doubles, with jitter)")
    retry_max_s: float = Field(
        default=30.0, gt=0, description="longest delay between delivery retries")
    delivery_overdue_s: float = Field(
        default=30.0, gt=0,
        description="an undelivered notification older than this is overdue (/readyz reports it)")
    fallback_sink_path: Path | None = Field(
        default=None,
        description="JSON-lines file that receives alerts Slack refuses for a configuration "
        "reason (revoked token, unknown channel); default data_dir/alerts-fallback.jsonl")


class ConfigServiceSettings(Section):
    """The configuration service that may override limits, venues and routing at run time."""

    enabled: bool = Field(default=False, description="take limits from the configuration service")
    url: str | None = Field(default=None, description="fixed URL; else found through discovery")
    service_name: str = Field(
        default="config-service", description="discovery name of the configuration service")
    component: str = Field(default="risk-monitor", description="our component name")
    poll_timeout_s: float = Field(default=20.0, gt=0, description="long-poll wait")
    cache_path: Path | None = Field(
        default=None, description="last good document, used when the service is down")


class Settings(BaseSettings):
    """Everything Risk Monitor reads at start; see docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="RISK_MONITOR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        yaml_file=None)

    environment: str = Field(default="embedded", description="label: embedded, ci, production; "
        "production (or prod) refuses simulator/sandbox endpoints and file-only alerting, "
        "see docs/production-purity.md")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="level of the JSON logs (RISK_MONITOR_LOG_LEVEL)")
    data_dir: Path = Field(default=Path(".risk_monitor"), description="embedded state directory")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite under data_dir")
    redis_url: str | None = Field(default=None, description="market data, discovery, breakers")
    limits_file: Path | None = Field(default=None, description="default: packaged limits.yaml")
    venues: list[VenueSettings] = Field(default_factory=list)
    custodians: list[CustodianSettings] = Field(default_factory=list)
    market_data: MarketDataSettings = Field(default_factory=MarketDataSettings)
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings)
    slack: SlackSettings | None = None
    alertmanager: AlertmanagerSettings | None = None
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    config_service: ConfigServiceSettings = Field(default_factory=ConfigServiceSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    trading: TradingSettings = Field(default_factory=TradingSettings)
    automation: Literal["auto", "on", "off"] = Field(
        default="auto", description="Dagster's sensors and schedule when the definitions load: "
        "auto = running when a venue or custodian is configured, stopped otherwise")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get() or os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=Path(config_file)))
        return tuple(sources)

    @field_validator("venues")
    @classmethod
    def _unique_venues(cls, value: list[VenueSettings]) -> list[VenueSettings]:
        seen = [(v.id, v.account) for v in value]
        dupes = {s for s in seen if seen.count(s) > 1}
        if dupes:
            raise ValueError(f"duplicate (id, account) pairs: {sorted(dupes)}")
        return value

    @model_validator(mode="after")
    def _budgets_exceed_polls(self) -> Settings:
        """Each source's freshness budget must outlast its poll interval, or a healthy source
        reads as stale between two polls."""
        md, svc = self.market_data, self.service
        for budget_key, budget, poll_key, poll in (
            ("max_age_s", md.max_age_s, "market_data.poll_interval_s", md.poll_interval_s),
            ("exchange_max_age_s", md.exchange_max_age_s, "service.positions_poll_s",
             svc.positions_poll_s),
            ("custody_max_age_s", md.custody_max_age_s, "service.custody_poll_s",
             svc.custody_poll_s),
        ):
            if budget <= poll:
                raise PydanticCustomError(
                    "budget_below_poll", f"market_data.{budget_key} ({budget:g}s) must be "
                    f"larger than {poll_key} ({poll:g}s)")
        return self

    @model_validator(mode="after")
    def _production_purity(self) -> Settings:
        # Raises ProductionPurityError (not a ValueError), so it reaches the caller as is.
        enforce_production_purity(self)
        return self

    # -- derived values -------------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'risk_monitor.db').resolve()}"

    @property
    def effective_limits_file(self) -> Path:
        return self.limits_file or Path(__file__).resolve().parent.parent / "config" / "limits.yaml"

    @property
    def instance_id(self) -> str:
        return self.service.instance_id or f"{socket.gethostname()}-{os.getpid()}"

    @staticmethod
    def secret(env_name: str | None, *, key: str) -> SecretStr | None:
        """Read one secret from the environment and register it for redaction."""
        if not env_name:
            return None
        value = os.environ.get(env_name)
        if value is None or value == "":
            return None
        register_secret(value)
        return SecretStr(value)

    @staticmethod
    def require_secret(env_name: str | None, *, key: str) -> SecretStr:
        value = Settings.secret(env_name, key=key)
        if value is None:
            raise ConfigError(
                f"environment variable {env_name!r} named by '{key}' is not set", key=key
            )
        return value

    def masked(self) -> dict[str, Any]:
        """The effective configuration for display: secret *names* and whether each is set."""
        data = self.model_dump(mode="json")
        data["effective_database_url"] = _mask_url(self.effective_database_url)
        data["database_url"] = _mask_url(self.database_url) if self.database_url else None
        data["redis_url"] = _mask_url(self.redis_url) if self.redis_url else None
        data["effective_limits_file"] = str(self.effective_limits_file)
        names = [getattr(v, key) for v in self.venues for key in v.CCXT_CREDENTIALS.values()]
        names += [n for c in self.custodians for n in (c.api_key_env, c.secret_key_env)]
        names += [self.slack.token_env] if self.slack else []
        names += [self.alertmanager.token_env] if self.alertmanager else []
        names += self.service.auth.token_envs
        data["secrets"] = {n: "set" if os.environ.get(n) else "NOT SET" for n in names if n}
        return data


def _mask_url(url: str) -> str:
    """The password of a URL masked, with or without a user name (``redis://:pw@host``)."""
    return re.sub(r"(://[^:/@]*:)[^@]+@", r"\1***@", url)


def _key_of(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings; any problem becomes a ConfigError naming the key."""
    path = Path(config_file) if config_file else None
    env_file = os.environ.get(CONFIG_FILE_ENV)
    source = path or (Path(env_file) if env_file else None)
    if source is not None:
        _check_yaml(source)
    token = _CONFIG_FILE.set(source)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _key_of(first["loc"])
        if first["type"] == "production_purity":
            raise ProductionPurityError(first["msg"], key=key) from None
        count = len(exc.errors())
        more = f" (and {count - 1} more)" if count > 1 else ""
        raise ConfigError(
            f"invalid configuration value at '{key}': {first['msg']}{more}", key=key
        ) from None
    finally:
        _CONFIG_FILE.reset(token)


def _check_yaml(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"configuration file {str(path)!r} does not exist", key=CONFIG_FILE_ENV)
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {str(path)!r} is not valid YAML: {exc}",
                          key=CONFIG_FILE_ENV) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"configuration file {str(path)!r} must hold a mapping",
                          key=CONFIG_FILE_ENV)
