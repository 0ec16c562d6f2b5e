"""Whether the risk sensors and schedule start running: the settings decide, not the code.

``automation: auto`` (the default) starts them only when something is watched (a venue or a
custodian): on an empty configuration they would request a run a minute, each one all UNKNOWN
with critical alerts, burying whatever the instance showed. ``on`` and ``off`` force it. The
state is read when the definitions load; the UI can still start or stop each one by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.settings import load_settings


@dataclass(frozen=True)
class AutomationState:
    running: bool
    reason: str

    @property
    def sensor_status(self) -> dg.DefaultSensorStatus:
        return dg.DefaultSensorStatus.RUNNING if self.running else dg.DefaultSensorStatus.STOPPED

    @property
    def schedule_status(self) -> dg.DefaultScheduleStatus:
        return dg.DefaultScheduleStatus.RUNNING if self.running \
            else dg.DefaultScheduleStatus.STOPPED


def automation_state() -> AutomationState:
    """What the current settings say (``RISK_MONITOR_CONFIG`` and the environment)."""
    try:
        settings = load_settings()
    except RiskMonitorError as exc:  # the runs would fail on it too; say so, start nothing
        return AutomationState(False, f"automation off: the settings do not load ({exc})")
    if settings.automation == "on":
        return AutomationState(True, "automation on: `automation: on` in the settings")
    if settings.automation == "off":
        return AutomationState(False, "automation off: `automation: off` in the settings")
    watched = len(settings.venues) + len(settings.custodians)
    if watched:
        return AutomationState(True, f"automation on: {watched} venue/custodian account(s) "
                                     "configured")
    return AutomationState(False, "automation off: no venue or custodian is configured, so "
                                  "every run would be UNKNOWN; configure venues (or set "
                                  "`automation: on`) and restart to start the sensors and "
                                  "schedule")


#: read once, when the code location loads (one process per code server)
AUTOMATION = automation_state()
