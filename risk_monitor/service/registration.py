"""What this service instance advertises in discovery (``adapters.redis_registry.Registration``
keeps it registered)."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from risk_monitor import __version__
from risk_monitor.platform.settings import Settings

_WILDCARD = {"", "0.0.0.0", "::", "[::]"}


def advertised_host(bind_host: str) -> str:
    """The host clients should dial: the bind address, or the hostname for a wildcard bind."""
    return socket.gethostname() if bind_host in _WILDCARD else bind_host


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def instance_info(settings: Settings, *, grpc_port: int, rest_port: int,
                  started_at: datetime) -> dict[str, Any]:
    """The registration hash content (see docs/service.md, "Discovery")."""
    grpc_host = advertised_host(settings.service.grpc_host)
    rest_host = advertised_host(settings.service.rest_host)
    venues = sorted({v.id for v in settings.venues})
    return {
        "grpc_address": _hostport(grpc_host, grpc_port),
        "rest_url": f"http://{_hostport(rest_host, rest_port)}",
        "version": __version__,
        "venues": venues,
        "started_at": started_at.astimezone(UTC).isoformat(),
        "metadata": {"environment": settings.environment, "pid": os.getpid()},
    }
