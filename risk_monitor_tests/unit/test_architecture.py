"""The direction of dependencies (docs/architecture.md), checked on every import statement."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "risk_monitor"

#: the error mapper imports no library (it matches class names), so the resilience policies in
#: platform may ask it whether an error is retryable
ALLOWED = {("platform", "risk_monitor.adapters.errors")}

FORBIDDEN: dict[str, tuple[str, ...]] = {
    # pure domain: no framework, no I/O library, no outer layer
    "domain": ("dagster", "ccxt", "fireblocks", "slack_sdk", "redis", "sqlalchemy", "psycopg2",
               "grpc", "aiohttp", "httpx", "requests", "starlette", "uvicorn", "structlog",
               "prometheus_client", "risk_monitor.adapters", "risk_monitor.defs",
               "risk_monitor.service", "risk_monitor.workflows", "risk_monitor.platform.settings",
               "risk_monitor.platform.logging", "risk_sim"),
    "adapters": ("dagster", "risk_monitor.defs", "risk_monitor.service", "risk_sim"),
    "platform": ("dagster", "risk_monitor.adapters", "risk_monitor.defs", "risk_monitor.service",
                 "risk_sim"),
    "service": ("dagster", "risk_monitor.defs", "risk_sim"),
    "defs": ("risk_monitor.service", "risk_sim"),
    # use cases: the domain and the ports only, never an adapter, a framework or an outer layer
    "application": ("dagster", "ccxt", "fireblocks", "slack_sdk", "redis", "sqlalchemy",
                    "psycopg2", "grpc", "risk_monitor.adapters", "risk_monitor.defs",
                    "risk_monitor.service", "risk_monitor.bootstrap", "risk_sim"),
    "": ("risk_sim",),  # nothing in risk_monitor imports the simulators
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def _files(layer: str) -> list[Path]:
    root = PACKAGE / layer if layer else PACKAGE
    return sorted(p for p in root.rglob("*.py") if "_pb2" not in p.name)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_inward(layer: str) -> None:
    violations = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _files(layer)
        for name in _imports(path)
        for banned in FORBIDDEN[layer]
        if (name == banned or name.startswith(banned + ".")) and (layer, name) not in ALLOWED
    ]
    assert not violations, "\n".join(violations)


def test_domain_imports_nothing_outside_the_domain() -> None:
    """Stricter than a ban list: any ``risk_monitor`` import of the domain is the domain's own
    (errors are the one shared vocabulary, ``platform.errors``)."""
    allowed = ("risk_monitor.domain", "risk_monitor.platform.errors")
    violations = [f"{p.relative_to(PACKAGE)} imports {n}" for p in _files("domain")
                  for n in _imports(p)
                  if n.startswith("risk_monitor") and not n.startswith(allowed)]
    assert not violations, "\n".join(violations)


#: the composition root's work: opening the store
WIRING_CALLS = ("Storage.open(", "Storage.on(", "create_engine(")
#: where those calls may stand: the root, the store's own package, and health.py's probe (a
#: throwaway engine that only asks "is the database there")
WIRING_ALLOWED = ("bootstrap.py", "adapters/sql/", "service/health.py")
#: CLI modules of other owners still opening the store themselves (to route through
#: ``cli._storage``, i.e. the composition root): nothing may join this list
WIRING_PENDING: tuple[str, ...] = ()


def test_only_the_composition_root_opens_the_store() -> None:
    """Every process (Dagster run, service, CLI) gets its store from ``risk_monitor.bootstrap``."""
    violations = [f"{rel}: {call}" for p in _files("")
                  for rel in [p.relative_to(PACKAGE).as_posix()]
                  if not rel.startswith(WIRING_ALLOWED + WIRING_PENDING)
                  for call in WIRING_CALLS if call in p.read_text()]
    assert not violations, "open it through risk_monitor.bootstrap: " + ", ".join(violations)


def test_no_private_dagster_imports() -> None:
    violations = [f"{p.relative_to(PACKAGE)}: {n}" for p in _files("") for n in _imports(p)
                  if n.startswith("dagster._")]
    assert not violations, violations


def test_every_port_is_used_as_a_type() -> None:
    """``ports.py`` describes what the code really uses: each Protocol is named in an annotation
    outside its own definition (another port's, a use case's, an adapter's)."""
    ports = ast.parse((PACKAGE / "ports.py").read_text())
    declared = {n.name for n in ports.body if isinstance(n, ast.ClassDef)
                and any(ast.unparse(b) == "Protocol" for b in n.bases)}
    used: set[str] = set()
    for path in _files(""):
        for node in ast.walk(ast.parse(path.read_text())):
            annotations = [getattr(node, "returns", None), getattr(node, "annotation", None)]
            for annotation in filter(None, annotations):
                text = ast.unparse(annotation)
                used |= {name for name in declared if re.search(rf"\b{name}\b", text)}
    assert declared - used == set(), f"ports never used as a type: {sorted(declared - used)}"
