"""Render the configuration reference (docs/configuration.md) from the settings models.

The reference is generated, so it cannot drift from the code: a test regenerates it and compares.
Run ``python -m risk_monitor.platform.settings_reference > docs/configuration.md`` after changing
a setting.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from risk_monitor.platform.settings import Settings

HEADER = """# Configuration reference

Generated from `risk_monitor/platform/settings.py` by
`python -m risk_monitor.platform.settings_reference > docs/configuration.md`; a test keeps it in
sync. Settings come from (highest first) explicit overrides, environment variables
(`RISK_MONITOR_<KEY>`, nested keys joined with `__`, e.g. `RISK_MONITOR_ALERTS__REPEAT_INTERVAL_S`),
the YAML file named by `RISK_MONITOR_CONFIG`, then the defaults below. Secrets are never values
here: `*_env` settings name the environment variable that holds each secret.
`risk-monitor check-config` prints the effective configuration with secrets masked.
"""


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace(
        "risk_monitor.platform.settings_service.", "").replace(
        "risk_monitor.platform.settings.", "").replace(" | ", " or ").replace("|", "or")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value, default=str)}`"
    if field.is_required():
        return "**required**"
    return f"`{json.dumps(field.default, default=str)}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel], bool]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        annotation = field.annotation
        inner = _section_model(annotation)
        if inner is model:  # a recursive section (a route's child routes): once is enough
            rows.append(f"| `{key}` | list | `[]` | {field.description or ''}, each a "
                        f"`{prefix.rstrip('.')}` again |")
            continue
        if inner is not None:
            nested.append((key, inner, "list" in str(annotation)))
            continue
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(annotation)} | {_default(field)} | {description} |")
    for key, inner, is_list in nested:
        rows.append(f"| `{key}` | section | | {inner.__doc__ or ''} |".replace("\n", " "))
        rows.extend(_rows(inner, f"{key}[]." if is_list else f"{key}."))
    return rows


def _section_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        for inner in (candidate, *getattr(candidate, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def render() -> str:
    lines = [HEADER, "| key | type | default | meaning |", "|---|---|---|---|"]
    lines.extend(_rows(Settings, ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
