"""Import only the parts of the ``fireblocks`` SDK the custodian adapter uses.

Why: the SDK's package ``__init__`` imports all ~60 API modules and ~1,300 models, and its
``ApiClient`` does ``import fireblocks.models`` (whose ``__init__`` imports every model again):
about 3 s of CPU in every process that reads a vault, i.e. in every Dagster run. We read one
endpoint (``GET /vault/accounts_paged``), which needs a handful of modules.

How: before the first import of the SDK, :func:`install_lazy_packages` registers the three
packages ``fireblocks``, ``fireblocks.api`` and ``fireblocks.models`` as *lazy* modules (PEP 562
``__getattr__``) on the real package directories. Submodules import from their own files as
usual; a model the client deserialises (``getattr(fireblocks.models, "VaultAccount")``) is
imported on first use from the module the SDK's own ``models/__init__.py`` names for it; any
other attribute (``fireblocks.Fireblocks``, ``fireblocks.api.TransactionsApi``) runs the real
package ``__init__`` into the same module first, so code that wants the whole SDK still gets it,
unchanged, at the old price. Nothing of the SDK is patched or copied.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any

_PACKAGES = ("fireblocks", "fireblocks.api", "fireblocks.models")
_MODEL_IMPORT = re.compile(r"^from fireblocks\.models\.(\w+) import (\w+)\s*$", re.MULTILINE)
_lock = threading.RLock()


class _LazyPackage(types.ModuleType):
    """A package whose ``__init__`` runs only when an attribute it defines is asked for."""

    _rf_loaded: bool
    _rf_names: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        with _lock:
            names = self.__dict__.get("_rf_names", {})
            if name in names:  # one model: import its own module only
                value = getattr(importlib.import_module(f"{self.__name__}.{names[name]}"), name)
                setattr(self, name, value)
                return value
            if any((Path(d) / f"{name}.py").is_file() or (Path(d) / name).is_dir()
                   for d in self.__path__):  # ``from fireblocks import rest``: a submodule
                return importlib.import_module(f"{self.__name__}.{name}")
            if not self.__dict__.get("_rf_loaded", False):
                self._rf_loaded = True
                spec = self.__spec__
                assert spec is not None and spec.loader is not None
                spec.loader.exec_module(self)  # the real __init__, into this module
                return getattr(self, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


def install_lazy_packages() -> None:
    """Register the lazy SDK packages unless the SDK is already imported (idempotent)."""
    with _lock:
        if "fireblocks" in sys.modules:
            return
        for name in _PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None or spec.submodule_search_locations is None:
                raise ImportError(f"the fireblocks SDK is not installed ({name} not found)")
            module = _LazyPackage(name)
            module.__spec__ = spec
            module.__file__ = spec.origin
            module.__path__ = list(spec.submodule_search_locations)
            module.__package__ = name
            module.__loader__ = spec.loader
            module._rf_loaded = False
            module._rf_names = {}
            if name == "fireblocks":
                module.__dict__["__version__"] = _version(Path(spec.origin))  # user_agent_util
            if name == "fireblocks.models":
                text = Path(spec.origin).read_text(encoding="utf-8")
                module._rf_names = {cls: mod for mod, cls in _MODEL_IMPORT.findall(text)}
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)


def _version(init: Path) -> str:
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', init.read_text(encoding="utf-8"),
                      re.MULTILINE)
    return found.group(1) if found else "0"
