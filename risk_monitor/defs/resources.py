"""Resources shared by every domain folder: the settings, and the runtime built from them.

Every resource takes what it needs from the composition root (``risk_monitor.bootstrap``):
one runtime per resource, per run and process (Dagster's resource lifecycle), closed after the
run. No module-level cache: a run is self-contained and the process owns nothing between runs.
"""

import dagster as dg
from pydantic import PrivateAttr

from risk_monitor.bootstrap import Runtime, build_runtime
from risk_monitor.platform.settings import Settings, load_settings


class RuntimeResource(dg.ConfigurableResource):
    """Base of the resources that use adapters: the runtime of the run's settings."""

    _runtime: Runtime | None = PrivateAttr(default=None)

    def runtime(self, settings: Settings) -> Runtime:
        """The runtime built from ``settings`` (rebuilt if the settings changed)."""
        if self._runtime is not None and self._runtime.settings != settings:
            self._runtime.close()
            self._runtime = None
        if self._runtime is None:
            self._runtime = build_runtime(settings)
        return self._runtime

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


class SettingsResource(dg.ConfigurableResource):
    """The validated settings; ``config_file`` overrides ``RISK_MONITOR_CONFIG``.

    Read once per run: every asset and check of a run asks for them (about ten times per
    ``risk_cycle`` run), and each read parses the YAML file twice and validates the whole model
    (~5 % of the demo's CPU). One run then also sees one configuration from its first step to its
    last; the next run reads the file again.
    """

    config_file: str | None = None
    _settings: Settings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = None

    def load(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file)
        return self._settings


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"settings": SettingsResource()})
