"""Resources shared by every domain folder."""

import dagster as dg

from risk_monitor.platform.settings import Settings, load_settings


class SettingsResource(dg.ConfigurableResource):
    """The validated settings; ``config_file`` overrides ``RISK_MONITOR_CONFIG``."""

    config_file: str | None = None

    def load(self) -> Settings:
        return load_settings(self.config_file)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"settings": SettingsResource()})
