"""Until the lead registers it in the root conftest, load the custody simulator fixtures here."""

from risk_monitor_tests.fixtures.custody_sims import (  # noqa: F401
    fireblocks_client,
    fireblocks_sim,
    fireblocks_sim_server,
    slack_sim,
    slack_sim_server,
)
