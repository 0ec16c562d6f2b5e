"""The narrow SDK imports: a vault read loads the models of its one response (no API module:
``VaultsApi`` would load the models of every vault operation), a ccxt client its exchange only.

Run in a fresh interpreter (the test process may already hold the whole SDK).
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from risk_monitor.adapters.fireblocks_custodian import load_sdk
from risk_monitor.adapters.lazy_packages import CCXT, install_lazy_packages
load_sdk()
install_lazy_packages(CCXT)
import ccxt
import fireblocks.models
exchange = ccxt.binanceusdm
model = fireblocks.models.VaultAccount
print(json.dumps({
    "exchange": exchange.__module__,
    "model": model.__module__,
    "ccxt_exchanges_loaded": sorted(m for m in sys.modules if m.startswith("ccxt.")
                                    and m.count(".") == 1 and m != "ccxt.base"),
    "fireblocks_apis": sorted(m for m in sys.modules if m.startswith("fireblocks.api.")),
    "fireblocks_models": sum(m.startswith("fireblocks.models.") for m in sys.modules),
}))
"""


def test_only_the_used_sdk_modules_are_imported() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=True, timeout=120)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["exchange"] == "ccxt.binanceusdm"
    assert found["model"] == "fireblocks.models.vault_account"
    assert found["fireblocks_apis"] == []
    assert found["fireblocks_models"] < 20  # of ~1,300 (VaultsApi alone: ~60)
    assert len(found["ccxt_exchanges_loaded"]) < 10  # of ~110: binanceusdm + its parents
