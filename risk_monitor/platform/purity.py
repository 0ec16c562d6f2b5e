"""Production purity: the one place that says what ``environment: production`` refuses.

A production configuration must reach production APIs only. Settings validation calls
:func:`enforce_production_purity`, so ``risk-monitor check-config``, ``serve``, the Dagster code
location and every other entry point refuse the same things at load time:

* loopback, private, link-local or unspecified addresses, single-label or ``localhost`` host
  names, plain ``http``/``ws`` schemes, and simulator, sandbox or test host names in any
  endpoint that reaches a third party (exchange REST and websocket, custodian, Slack);
* loopback addresses and simulator host names for the configuration service (an internal
  service, so a private address is fine there);
* sandbox, testnet and paper-trading options, and the client-side rate limiter switched off
  (a test-only setting);
* alerting that ends in the file sink only (no Slack).

Host names are judged as written, never resolved: loading settings does no I/O, and a
production host may legitimately resolve to a private address (VPC endpoints).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from risk_monitor.platform.errors import ProductionPurityError

if TYPE_CHECKING:
    from risk_monitor.platform.settings import Settings

#: ``environment`` values that switch the rules on (compared case-insensitively).
PRODUCTION_ENVIRONMENTS = frozenset({"production", "prod"})

_TLS_SCHEMES = frozenset({"https", "wss"})
_NON_PRODUCTION_LABEL = re.compile(
    r"(^|[.-])(localhost|sim|sims|simulator|risk-sim|mock|fake|stub|sandbox|testnet|test|"
    r"demo|paper|staging|dev)([.-]|$)",
    re.IGNORECASE,
)
_SANDBOX_WORDS = re.compile(r"(sandbox|testnet|demo[-_]?trading|paper|simulat)", re.IGNORECASE)
_SANDBOX_OPTION = re.compile(r"(sandbox|testnet|demo[-_]?trading|paper)", re.IGNORECASE)
SANDBOX_OPTION_REFUSED = ("selects a sandbox/test mode; Risk Monitor reads production APIs only "
                          "(point endpoint_override at a simulator instead)")


def sandbox_option(options: Mapping[str, Any]) -> str | None:
    """The first ccxt option switching a sandbox/test mode on: refused in every environment
    (by the settings and again by the client builder, which does not trust its caller)."""
    return next((str(key) for key, value in options.items()
                 if _SANDBOX_OPTION.search(str(key)) and value not in (False, None)), None)


@dataclass(frozen=True)
class PurityViolation:
    """One refused setting: the dotted key and why production may not use it."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


def production_purity_violations(settings: Settings) -> list[PurityViolation]:
    """Every rule a production configuration breaks, in settings order (empty when pure).

    Returns nothing for non-production environments: simulators and CI are configured
    through the very same keys.
    """
    if settings.environment.strip().lower() not in PRODUCTION_ENVIRONMENTS:
        return []
    found: list[PurityViolation] = []
    for index, venue in enumerate(settings.venues):
        prefix = f"venues.{index}"
        found += _third_party_endpoint(f"{prefix}.endpoint_override", venue.endpoint_override)
        found += _third_party_endpoint(f"{prefix}.ws_endpoint_override",
                                       venue.ws_endpoint_override)
        found += _test_options(f"{prefix}.options", venue.options)
        if not venue.enable_rate_limit:
            found.append(PurityViolation(
                f"{prefix}.enable_rate_limit",
                "the client-side rate limiter is off, a test-only setting; production keeps "
                "it on (remove the key)"))
    for index, custodian in enumerate(settings.custodians):
        found += _third_party_endpoint(f"custodians.{index}.endpoint_override",
                                       custodian.endpoint_override)
    if settings.slack is None:
        found.append(PurityViolation(
            "slack", "alerting goes to the file sink only; production needs Slack "
            "(configure the 'slack' section and its token_env)"))
    else:
        found += _third_party_endpoint("slack.base_url", settings.slack.base_url)
    found += _internal_endpoint("config_service.url", settings.config_service.url)
    return found


def enforce_production_purity(settings: Settings) -> None:
    """Raise :class:`ProductionPurityError` naming the first refused key (and listing all)."""
    violations = production_purity_violations(settings)
    if not violations:
        return
    first = violations[0]
    more = "".join(f"\n  - {v}" for v in violations[1:])
    also = f"\nalso refused:{more}" if more else ""
    raise ProductionPurityError(
        f"environment '{settings.environment}' refuses '{first.key}': {first.reason}{also}",
        key=first.key,
        details={"violations": [str(v) for v in violations]},
    )


def _third_party_endpoint(key: str, url: str | None) -> list[PurityViolation]:
    if url is None:
        return []
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in _TLS_SCHEMES:
        return [PurityViolation(key, f"{url!r} is not TLS (https:// or wss://); production "
                                     "APIs are reached over TLS only")]
    problem = _host_problem(host, allow_private=False)
    if problem is None and "." not in host:
        problem = "a single-label host name (a container or simulator name), not a public host"
    return [PurityViolation(key, f"{url!r}: {problem}")] if problem else []


def _internal_endpoint(key: str, url: str | None) -> list[PurityViolation]:
    if url is None:
        return []
    problem = _host_problem((urlsplit(url).hostname or "").lower(), allow_private=True)
    return [PurityViolation(key, f"{url!r}: {problem}")] if problem else []


def _host_problem(host: str, *, allow_private: bool) -> str | None:
    if not host:
        return "has no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.is_loopback or address.is_unspecified:
            return "a loopback address (a simulator or a local process), not a production API"
        if address.is_link_local or address.is_multicast or address.is_reserved:
            return "a link-local or reserved address, not a production API"
        if address.is_private and not allow_private:
            return "a private address, not a production API"
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback host name, not a production API"
    if _NON_PRODUCTION_LABEL.search(host):
        return "a simulator, sandbox or test host name, not a production API"
    return None


def _test_options(key: str, options: dict[str, Any]) -> list[PurityViolation]:
    found = []
    for name, value in options.items():
        if isinstance(value, str) and _SANDBOX_WORDS.search(value):
            found.append(PurityViolation(
                f"{key}.{name}", f"value {value!r} selects a sandbox or test mode; production "
                                 "reads production APIs only"))
    return found
