"""Risk assets."""

import hashlib

import dagster as dg
import yaml

from risk_monitor.defs.resources import SettingsResource


@dg.asset(group_name="risk", kinds={"python", "yaml"}, owners=["team:risk"])
def limit_config(context: dg.AssetExecutionContext, settings: SettingsResource) -> dict:
    """The limit configuration in force, versioned by content hash."""
    path = settings.load().effective_limits_file
    raw = path.read_bytes()
    version = hashlib.sha256(raw).hexdigest()[:12]
    doc = yaml.safe_load(raw) or {}
    context.add_output_metadata({"version": version, "path": str(path)})
    return {"version": version, "document": doc}
