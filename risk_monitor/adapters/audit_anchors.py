"""Anchors of the audit chain outside the database, and reading them back for ``audit verify``.

A chain proves nothing against someone who can rewrite all of it; a head hash recorded where
that person cannot write does. Three anchors, each at least once a minute in a running
deployment:

* **Dagster**: every run of the risk cycle records the head as ``audit_head_id`` /
  ``audit_head_hash`` metadata of ``compliance_status`` (Dagster's event log is its own
  storage, append-only in practice, and shows up in the UI);
* **Prometheus**: the service exports ``risk_monitor_audit_chain_head{hash=...}`` (the head id)
  on every scrape, and Prometheus keeps the history;
* **a file**: ``risk-monitor audit anchor --file PATH`` appends the head as one JSON line (cron,
  a Kubernetes CronJob, or WORM storage).

``audit verify`` reads the file anchors here and the Dagster ones through
``risk_monitor.dagster_catalog`` (adapters do not import Dagster), and fails when the chain
disagrees.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from risk_monitor.adapters.sql.audit_log import ChainHead
from risk_monitor.adapters.sql.audit_verify import Anchor
from risk_monitor.platform.errors import ConfigError

#: the asset whose materialisations carry the head (the last asset of every risk-cycle run)
ANCHOR_ASSET = "compliance_status"
HEAD_ID_KEY = "audit_head_id"
HEAD_HASH_KEY = "audit_head_hash"


def anchor_metadata(head: ChainHead) -> dict[str, Any]:
    """Asset metadata recording the head (Dagster keeps it outside our database)."""
    return {HEAD_ID_KEY: head.id, HEAD_HASH_KEY: head.hash}


def append_file_anchor(path: Path, head: ChainHead, *, source: str, at: datetime) -> None:
    """Append one anchor line (the file is append-only by convention; put it on WORM storage)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"at": at.astimezone(UTC).isoformat(), "head_id": head.id,
                       "head_hash": head.hash, "source": source}, sort_keys=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def read_file_anchors(path: Path) -> list[Anchor]:
    """Every anchor line of the file; a malformed line is an error, never skipped."""
    anchors: list[Anchor] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read audit anchors file {path}: {exc}",
                          key="audit.anchors_file") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            anchors.append(Anchor(head_id=int(data["head_id"]), head_hash=str(data["head_hash"]),
                                  source=f"{path.name}:{number} ({data.get('source', '?')})",
                                  at=datetime.fromisoformat(data["at"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"audit anchors file {path} line {number} is malformed: {exc}",
                              key="audit.anchors_file") from exc
    return anchors
