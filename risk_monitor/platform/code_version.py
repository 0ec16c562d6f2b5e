"""The code version every alert, audit entry and asset names: what code really ran.

The package version (``0.1.0``) names a release, not the code: two builds of one release can
differ, and a checkout with local edits is not the release at all. In order of preference:

1. ``RISK_MONITOR_CODE_VERSION`` from the environment: the Docker image sets it from the
   ``GIT_COMMIT`` build argument (``docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD)``);
2. ``risk_monitor/_code_version.txt``, stamped into a wheel at build time by
   ``python -m risk_monitor.platform.code_version --stamp`` before ``python -m build``;
3. ``git:<commit>`` of the checkout the package is imported from, ``+dirty`` with local edits;
4. ``src:<sha256>`` of the package's Python sources when there is no git at all.

``source_hash`` is also what the Dagster assets use as their ``code_version``: a hash of the
module source they run, so "code changed" in the UI means the code changed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ENV_VAR = "RISK_MONITOR_CODE_VERSION"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
STAMP_FILE = PACKAGE_DIR / "_code_version.txt"


def source_hash(paths: Iterable[Path], *, root: Path = PACKAGE_DIR) -> str:
    """sha256 over the files' relative paths and contents, in path order (12 hex chars)."""
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name)
                      .encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def package_source_hash() -> str:
    """Content hash of every ``.py`` file of the package (and the packaged limits)."""
    files = [p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts]
    files += list((PACKAGE_DIR / "config").glob("*.yaml"))
    return source_hash(files)


#: code every asset runs besides its own module: the rules, the use cases, the adapters
SHARED_CODE = ("domain", "adapters", "application", "defs/metadata.py",
               "defs/risk_support.py", "defs/collection_support.py", "defs/failures.py")


@functools.cache
def shared_code_files() -> tuple[Path, ...]:
    files: list[Path] = []
    for name in SHARED_CODE:
        path = PACKAGE_DIR / name
        if path.is_dir():
            files += [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
        elif path.is_file():
            files.append(path)
    return tuple(files)


def module_code_version(module_name: str) -> str:
    """An asset's ``code_version``: hash of its module's source and the shared code it runs,
    so Dagster says "code changed" exactly when the code behind the asset changed."""
    module = sys.modules[module_name]
    path = Path(module.__file__ or "")
    if not path.is_file():
        return package_source_hash()
    return source_hash([path, *shared_code_files()])


def _git_version(directory: Path) -> str | None:
    try:
        commit = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no",
             "--", str(directory)],
            capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = commit.stdout.strip()
    if not sha:
        return None
    return f"git:{sha}" + ("+dirty" if status.stdout.strip() else "")


@functools.cache
def code_version() -> str:
    """The running code's version (module docstring), computed once per process."""
    stamped = os.environ.get(ENV_VAR, "").strip()
    if stamped:
        return stamped if ":" in stamped else f"git:{stamped}"
    if STAMP_FILE.is_file():
        text = STAMP_FILE.read_text().strip()
        if text:
            return text
    if (PACKAGE_DIR.parent / ".git").exists():
        from_git = _git_version(PACKAGE_DIR)
        if from_git:
            return from_git
    return f"src:{package_source_hash()}"


def stamp() -> str:
    """Write the current code version into the package (run before building a wheel)."""
    code_version.cache_clear()
    STAMP_FILE.unlink(missing_ok=True)
    version = code_version()
    STAMP_FILE.write_text(version + "\n")
    return version


if __name__ == "__main__":
    print(stamp() if "--stamp" in sys.argv[1:] else code_version())
