"""Benchmark: the README's demo command, ``risk-sim demo``, as a newcomer runs it.

Run from the repository root (no server needed)::

    python bench/bench_demo.py            # 3 runs
    python bench/bench_demo.py --runs 5

Each run starts ``risk-sim demo`` as a subprocess in a fresh empty directory (no DAGSTER_HOME,
no Risk Monitor environment), measures its wall time and the CPU time of the process and its
children (user + system, from ``resource.getrusage(RUSAGE_CHILDREN)``), and records the load
average before and after: on a busy machine wall time says more about the neighbours than
about the demo, CPU time much less so. It prints p50 / max wall, p50 / max CPU, and whether
the Python bytecode of the environment was compiled (without ``.pyc`` files every import
compiles from source: ~20 s of CPU more; ``pip install`` compiles, ``uv pip install`` needs
``--compile-bytecode``).

Not a test: it asserts nothing about timings; it exits 1 when a demo run fails.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DemoTiming:
    wall_s: float
    cpu_s: float
    load_before: float
    load_after: float
    returncode: int


def risk_sim() -> list[str]:
    script = Path(sys.executable).with_name("risk-sim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "risk_sim.cli"]


def bytecode_compiled() -> bool:
    """True when the installed dagster package has compiled bytecode next to its sources."""
    import dagster

    package = Path(dagster.__file__).parent
    return any((package / "__pycache__").glob("__init__.*.pyc"))


def compile_project() -> None:
    """The project's own bytecode, as a user's first run writes it (this machine sets
    ``PYTHONDONTWRITEBYTECODE=1``, so every demo would compile ~140 modules from source)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "risk_monitor", "risk_sim"],
                   cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                   check=True)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(scenario: str) -> DemoTiming:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as cwd:
        load_before = os.getloadavg()[0]
        cpu_before = children_cpu_s()
        started = time.perf_counter()
        done = subprocess.run([*risk_sim(), "demo", "--scenario", scenario], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - started
        cpu = children_cpu_s() - cpu_before
        if done.returncode != 0:
            sys.stderr.write(done.stderr.decode(errors="replace")[-2000:])
    return DemoTiming(wall, cpu, load_before, os.getloadavg()[0], done.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", default="limit_breach")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave the project's bytecode as it is (see compile_project)")
    args = parser.parse_args(argv)
    if not args.no_compile:
        compile_project()
    print(f"bytecode compiled: {bytecode_compiled()} (project: "
          f"{'as found' if args.no_compile else 'compiled'}) · cores: {os.cpu_count()}")
    timings: list[DemoTiming] = []
    for n in range(1, args.runs + 1):
        timing = run_once(args.scenario)
        timings.append(timing)
        print(f"run {n}: wall {timing.wall_s:.1f} s · CPU {timing.cpu_s:.1f} s · load average "
              f"{timing.load_before:.1f} → {timing.load_after:.1f} · exit {timing.returncode}",
              flush=True)
    walls = [t.wall_s for t in timings]
    cpus = [t.cpu_s for t in timings]
    print(f"wall p50 {statistics.median(walls):.1f} s, max {max(walls):.1f} s · "
          f"CPU p50 {statistics.median(cpus):.1f} s, max {max(cpus):.1f} s · "
          f"load average {min(t.load_before for t in timings):.1f} to "
          f"{max(t.load_after for t in timings):.1f}")
    return 0 if all(t.returncode == 0 for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
