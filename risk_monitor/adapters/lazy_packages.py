"""Import only the parts of a big SDK an adapter uses (``fireblocks``, ``ccxt``).

Why: the ``fireblocks`` package ``__init__`` imports all ~60 API modules and ~1,300 models, and
its ``ApiClient`` does ``import fireblocks.models`` (whose ``__init__`` imports every model
again): about 3 s of CPU in every process that reads a vault, i.e. in every Dagster run; we read
one endpoint (``GET /vault/accounts_paged``). ``ccxt``'s ``__init__`` imports its ~110 exchange
classes (~1 s); a desk uses two or three.

How: before the first import of the SDK, :func:`install_lazy_packages` registers the named
packages as *lazy* modules (PEP 562 ``__getattr__``) on the real package directories. Submodules
import from their own files as usual; an attribute the package ``__init__`` would have imported
(``getattr(fireblocks.models, "VaultAccount")``, ``ccxt.binanceusdm``) is imported on first use
from the module that ``__init__`` names for it (read from its ``from pkg.mod import Name``
lines); any other attribute (``fireblocks.Fireblocks``, ``ccxt.exchanges``) runs the real package
``__init__`` into the same module first, so code that wants the whole SDK still gets it,
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

FIREBLOCKS = ("fireblocks", "fireblocks.api", "fireblocks.models")
CCXT = ("ccxt",)
_IMPORT_LINE = re.compile(r"^from ([\w.]+) import (\w+)\s*(?:#.*)?$", re.MULTILINE)
_lock = threading.RLock()


class _LazyPackage(types.ModuleType):
    """A package whose ``__init__`` runs only when an attribute it defines is asked for."""

    _rf_loaded: bool
    _rf_names: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        # no lock around imports: the import system serialises them per module, and a lock of
        # ours held across an import could deadlock against another thread's import
        names = self.__dict__.get("_rf_names", {})
        if name in names:  # one class: import its own module only
            value = getattr(importlib.import_module(names[name]), name)
            setattr(self, name, value)
            return value
        if any((Path(d) / f"{name}.py").is_file() or (Path(d) / name).is_dir()
               for d in self.__path__):  # ``from fireblocks import rest``: a submodule
            return importlib.import_module(f"{self.__name__}.{name}")
        with _lock:
            first = not self.__dict__.get("_rf_loaded", False)
            self._rf_loaded = True
        if first:
            spec = self.__spec__
            assert spec is not None and spec.loader is not None
            spec.loader.exec_module(self)  # the real __init__, into this module
            return getattr(self, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


def install_lazy_packages(packages: tuple[str, ...] = FIREBLOCKS) -> None:
    """Register ``packages`` (a top-level package first, then subpackages) as lazy modules,
    unless the top-level package is already imported (idempotent)."""
    with _lock:
        if packages[0] in sys.modules:
            return
        for name in packages:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None or spec.submodule_search_locations is None:
                raise ImportError(f"{name} is not installed")
            module = _LazyPackage(name)
            module.__spec__ = spec
            module.__file__ = spec.origin
            module.__path__ = list(spec.submodule_search_locations)
            module.__package__ = name
            module.__loader__ = spec.loader
            module._rf_loaded = False
            text = Path(spec.origin).read_text(encoding="utf-8")
            version = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
            if version:  # read at import by some submodules (fireblocks' user agent)
                module.__dict__["__version__"] = version.group(1)
            prefix = name + "."
            module._rf_names = {attr: source for source, attr in _IMPORT_LINE.findall(text)
                                if source.startswith(prefix)}
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
