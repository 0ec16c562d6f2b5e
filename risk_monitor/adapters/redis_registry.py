"""Service registration and discovery in Redis.

Redis 7.0 has no per-field hash TTL, so every instance owns one hash key
``<prefix>:<service>:<instance>`` written with HSET + EXPIRE in one MULTI transaction and
refreshed at TTL/3 by a heartbeat. An instance that dies stops refreshing and Redis expires its
key within the TTL; a clean shutdown deletes it at once. Discovery SCANs ``<prefix>:<service>:*``
and caches the answer for a short time.

The clients here are synchronous (redis-py); the asyncio service calls them through
``asyncio.to_thread`` so the same code serves Dagster, the CLI and the service.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from risk_monitor.adapters.errors import map_exception
from risk_monitor.platform.errors import DiscoveryError, RiskMonitorError, StorageError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.ports import ServiceRegistry

log = get_logger(__name__)

DEFAULT_PREFIX = "svc"
_GLOB_SPECIAL = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


def instance_key(prefix: str, service: str, instance_id: str) -> str:
    """The Redis key of one registered instance."""
    return f"{prefix}:{service}:{instance_id}"


def service_pattern(prefix: str, service: str) -> str:
    """SCAN pattern matching every instance of ``service`` (glob characters escaped)."""
    return f"{prefix.translate(_GLOB_SPECIAL)}:{service.translate(_GLOB_SPECIAL)}:*"


@dataclass(frozen=True)
class ServiceInstance:
    """One registered instance as discovery returns it."""

    service: str
    instance_id: str
    grpc_address: str = ""  # host:port for a gRPC channel; "" when the instance has none
    rest_url: str = ""  # http://host:port; "" when the instance has none
    version: str = ""
    venues: tuple[str, ...] = ()
    started_at: str = ""  # ISO 8601 UTC
    heartbeat_at: str = ""
    ttl_s: float = 0.0
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_hash(self) -> dict[str, str]:
        """Redis hash fields (all strings)."""
        return {**{name: getattr(self, name) for name in _TEXT_FIELDS},
                "venues": json.dumps(list(self.venues)), "ttl_s": repr(float(self.ttl_s)),
                "metadata": json.dumps(dict(self.metadata), sort_keys=True, default=str)}

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> ServiceInstance:
        """Decode a hash written by any registrant; unknown fields go to ``metadata``."""
        data = {_text(k): _text(v) for k, v in raw.items()}
        metadata: dict[str, Any] = _json_or(data.get("metadata"), {})
        if not isinstance(metadata, dict):
            metadata = {}
        metadata.update({k: v for k, v in data.items()
                         if k not in {*_TEXT_FIELDS, "venues", "ttl_s", "metadata"}})
        venues = _json_or(data.get("venues"), [])
        try:
            ttl = float(data.get("ttl_s") or 0.0)
        except ValueError:
            ttl = 0.0
        return cls(**{name: data.get(name, "") for name in _TEXT_FIELDS}, ttl_s=ttl,
                   venues=tuple(str(v) for v in venues) if isinstance(venues, list) else (),
                   metadata=metadata)


#: the fields stored as they are (the others are encoded)
_TEXT_FIELDS = ("service", "instance_id", "grpc_address", "rest_url", "version", "started_at",
                "heartbeat_at")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _json_or(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def connect(url: str, *, timeout_s: float = 2.0) -> redis.Redis:
    """A redis-py client with bounded connect/read timeouts (a dead Redis never hangs us)."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )


def _storage_error(exc: BaseException, action: str) -> RiskMonitorError:
    error = map_exception(exc, source="redis")
    if not isinstance(error, StorageError):
        error = StorageError(error.message, source="redis", retryable=error.retryable)
    error.details.setdefault("action", action)
    return error


class RedisServiceRegistry:
    """Registers instances (implements ``risk_monitor.ports.ServiceRegistry``)."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def register(self, service: str, instance_id: str, info: Mapping[str, Any],
                 ttl_s: float) -> None:
        """Write (or refresh) the instance hash and its TTL atomically."""
        key = instance_key(self.prefix, service, instance_id)
        fields: dict[Any, Any] = ServiceInstance(
            service=service, instance_id=instance_id,
            grpc_address=str(info.get("grpc_address", "")),
            rest_url=str(info.get("rest_url", "")),
            version=str(info.get("version", "")),
            venues=tuple(info.get("venues", ())),
            started_at=str(info.get("started_at", "")),
            heartbeat_at=datetime.now(UTC).isoformat(),
            ttl_s=ttl_s,
            metadata=dict(info.get("metadata", {})),
        ).to_hash()
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, max(1, int(ttl_s * 1000)))
                pipe.execute()
        except redis.RedisError as exc:
            raise _storage_error(exc, "register") from exc

    def deregister(self, service: str, instance_id: str) -> None:
        try:
            self.client.delete(instance_key(self.prefix, service, instance_id))
        except redis.RedisError as exc:
            raise _storage_error(exc, "deregister") from exc


def scan_instances(client: redis.Redis, prefix: str, service: str) -> list[ServiceInstance]:
    """Every live instance of ``service`` (expired keys never come back from SCAN/HGETALL)."""
    try:
        keys = sorted(client.scan_iter(match=service_pattern(prefix, service), count=1000))
        if not keys:
            return []
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            hashes = pipe.execute()
    except redis.RedisError as exc:
        raise _storage_error(exc, "discover") from exc
    found = []
    for raw in hashes:
        if raw:  # the key may expire between SCAN and HGETALL
            found.append(ServiceInstance.from_hash(raw))
    return found


class Registration:
    """One instance's registration with a heartbeat thread refreshing it at TTL/3.

    The heartbeat re-writes the whole hash (not only EXPIRE), so the entry comes back by itself
    after Redis restarts empty. Failures are logged and counted; ``healthy`` says whether the last
    write succeeded (the service's readiness shows it).
    """

    def __init__(self, registry: ServiceRegistry, service: str, instance_id: str,
                 info: Mapping[str, Any], ttl_s: float) -> None:
        self.registry = registry
        self.service = service
        self.instance_id = instance_id
        self.key = instance_key(registry.prefix, service, instance_id)
        self.info = dict(info)
        self.ttl_s = ttl_s
        self.interval_s = max(ttl_s / 3.0, 0.05)
        self.healthy = False
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Write the registration once; True when Redis accepted it."""
        with self._lock:
            if self._stop.is_set():
                return False
            try:
                self.registry.register(self.service, self.instance_id, self.info, self.ttl_s)
            except RiskMonitorError as exc:
                if self.healthy or self.last_error is None:
                    log.warning("registration_failed", service=self.service,
                                instance_id=self.instance_id, error=str(exc))
                    record_error(exc)
                self.healthy = False
                self.last_error = str(exc)
                return False
            if not self.healthy:
                log.info("registered", service=self.service, instance_id=self.instance_id,
                         key=self.key, ttl_s=self.ttl_s, **{k: v for k, v in self.info.items()
                                                             if k in ("grpc_address", "rest_url")})
            self.healthy = True
            self.last_error = None
            return True

    def start(self) -> Registration:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name=f"registry-{self.service}",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def stop(self) -> None:
        """Stop the heartbeat and delete the key (best effort: it expires anyway)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            try:
                self.registry.deregister(self.service, self.instance_id)
                log.info("deregistered", service=self.service, instance_id=self.instance_id)
            except RiskMonitorError as exc:
                log.warning("deregistration_failed", service=self.service,
                            instance_id=self.instance_id, error=str(exc))
                record_error(exc)


class DiscoveryClient:
    """Finds instances of a service, caching answers for ``cache_ttl_s``."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX,
                 cache_ttl_s: float = 1.0) -> None:
        self.client = client
        self.prefix = prefix
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, list[ServiceInstance]]] = {}
        self._lock = threading.Lock()

    def instances(self, service: str) -> list[ServiceInstance]:
        """Live instances, from the cache when it is younger than ``cache_ttl_s``."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(service)
        if cached is not None and now - cached[0] < self.cache_ttl_s:
            return list(cached[1])
        found = scan_instances(self.client, self.prefix, service)
        with self._lock:
            self._cache[service] = (time.monotonic(), found)
        return list(found)

    def invalidate(self, service: str) -> None:
        with self._lock:
            self._cache.pop(service, None)

    def pick(self, service: str, *, need: str = "rest_url") -> ServiceInstance:
        """One instance offering ``need`` (random among equals); DiscoveryError when none."""
        candidates = [i for i in self.instances(service) if getattr(i, need)]
        if not candidates:
            raise DiscoveryError(f"no live instance of {service!r} with {need} in the registry",
                                 source="redis", details={"service": service})
        return random.choice(candidates)
