"""Loopback ports for simulators and the servers the tests start."""
from __future__ import annotations

import random
import socket
from pathlib import Path

_FALLBACK_EPHEMERAL_START = 32768
_LOWEST = 20000
_random = random.SystemRandom()


def _ephemeral_start() -> int:
    """First port of the kernel's ephemeral range (``ip_local_port_range``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_START


def free_port() -> int:
    """A loopback TCP port that is free now and outside the kernel's ephemeral range.

    Port 0 would hand out an ephemeral port, which any process's next outgoing connection or
    auto-bound server (a Dagster code server, a gRPC client) can take before our server binds
    it: CI once lost a dagster-webserver to exactly that. Ports below the ephemeral range are
    only ever taken by explicit binds, so a random free one stays free."""
    top = max(_LOWEST + 1000, _ephemeral_start() - 1)
    for _ in range(200):
        port = _random.randint(_LOWEST, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_LOWEST}..{top}")
