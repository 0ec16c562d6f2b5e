"""Benchmark: one ``risk_cycle`` Dagster run, from launch to its last step, wall and CPU.

Run from the repository root (no server needed)::

    python bench/bench_risk_cycle_run.py              # 3 runs per round, 3 rounds
    python bench/bench_risk_cycle_run.py --runs 5 --rounds 1

It starts the ``limit_breach`` simulators (Binance, OKX, Fireblocks) in this process, writes
Risk Monitor settings pointing at them (file alert sink, packaged limits, a throwaway SQLite
DAGSTER_HOME with the repository's ``dagster.yaml``), then launches ``risk_cycle`` the way a run
worker executes it: a fresh ``dagster job execute -m risk_monitor.definitions -j risk_cycle``
process, which imports the code location (Dagster, our definitions, then ccxt, the Fireblocks
SDK, pandera... as the steps need them) and runs every step with the job's executor.

Per run it records: *launch → last step* (wall from spawning the process to the end of the
run's last step event, read back from the instance's event log), the process's whole wall time
(including interpreter shutdown), its CPU time (user + system of the child, from
``RUSAGE_CHILDREN``) and the run's own *start → last step* from the event log. It prints p50 /
p99 / max per figure over all runs, the spread of the per-round medians and the 1-minute load
average before and after. Goal (issue 10): launch → last step ≤ 3 s on an idle machine.

Before measuring it compiles the project's own bytecode (``compileall`` of ``risk_monitor`` and
``risk_sim``, as a deployed image ships it; ``--no-compile`` skips that). An editable install
has no ``.pyc`` files for the project, and with ``PYTHONDONTWRITEBYTECODE=1`` (set on this
machine) every run process would compile ~140 modules from source: ~0.4 s of CPU per run.

Not a test: it asserts nothing about timings; it exits 1 when a run fails.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DAGSTER_YAML = ROOT / "dagster.yaml"


@dataclass
class RunTiming:
    launch_to_last_step_s: float
    process_wall_s: float
    cpu_s: float
    run_start_to_last_step_s: float
    success: bool


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dagster_cli() -> list[str]:
    script = Path(sys.executable).with_name("dagster")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dagster"]


def last_run_events(home: Path) -> tuple[str, float | None, float | None, bool]:
    """(run id, run start time, last step end time, success) of the newest run."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(limit=1)
        if not records:
            return "", None, None, False
        run = records[0].dagster_run
        started = None
        last_step = None
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.RUN_START:
                started = record.timestamp
            if event.event_type in (dg.DagsterEventType.STEP_SUCCESS,
                                    dg.DagsterEventType.STEP_FAILURE):
                last_step = max(last_step or 0.0, record.timestamp)
        return run.run_id, started, last_step, run.status == dg.DagsterRunStatus.SUCCESS


def launch_once(home: Path, env: dict[str, str]) -> RunTiming:
    cpu_before = children_cpu_s()
    launched = time.time()
    started = time.perf_counter()
    done = subprocess.run([*dagster_cli(), "job", "execute", "-m", "risk_monitor.definitions",
                           "-j", "risk_cycle"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    cpu = children_cpu_s() - cpu_before
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace")[-3000:])
    _, run_start, last_step, success = last_run_events(home)
    to_last = (last_step - launched) if last_step else float("nan")
    in_run = (last_step - run_start) if last_step and run_start else float("nan")
    return RunTiming(to_last, wall, cpu, in_run, success and done.returncode == 0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenario", default="limit_breach")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave the project's bytecode as it is (see the module docstring)")
    args = parser.parse_args(argv)
    if not args.no_compile:
        subprocess.run([sys.executable, "-m", "compileall", "-q", "risk_monitor", "risk_sim"],
                       cwd=ROOT, stdout=subprocess.DEVNULL, check=True)

    sys.path.insert(0, str(ROOT))
    from risk_sim.launcher import SLACK_TOKEN_ENV, SimulatorStack

    work = Path(tempfile.mkdtemp(prefix="bench-risk-cycle-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    stack = SimulatorStack(args.scenario, clock="manual", control=False).start()
    failures = 0
    rounds: list[list[RunTiming]] = []
    load_before = os.getloadavg()[0]
    try:
        document = stack.settings_document()
        document.pop("slack", None)
        document.pop("config_service", None)
        document["environment"] = "bench"
        document["data_dir"] = str(work / "state")
        settings = work / "risk-monitor.yaml"
        settings.write_text(yaml.safe_dump(document, sort_keys=False))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
        env.update({k: v for k, v in stack.env().items() if k != SLACK_TOKEN_ENV})
        env.update({"RISK_MONITOR_CONFIG": str(settings), "DAGSTER_HOME": str(home),
                    "RISK_MONITOR_LOG_LEVEL": "WARNING"})
        launch_once(home, env)  # first run: creates the stores, fills the OS file cache
        for _ in range(args.rounds):
            timings = [launch_once(home, env) for _ in range(args.runs)]
            failures += sum(not t.success for t in timings)
            rounds.append(timings)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]
    every = [t for r in rounds for t in r]
    print(f"risk_cycle runs: {len(every)} ({args.rounds} rounds x {args.runs}), "
          f"failed: {failures}; load average {load_before:.2f} -> {load_after:.2f}; "
          f"project bytecode {'as found' if args.no_compile else 'compiled'}")
    print(f"{'figure':<28} {'p50':>8} {'p99':>8} {'max':>8}   round medians")
    for label, attr in (("launch -> last step (s)", "launch_to_last_step_s"),
                        ("run start -> last step (s)", "run_start_to_last_step_s"),
                        ("process wall (s)", "process_wall_s"),
                        ("process CPU (s)", "cpu_s")):
        values = [getattr(t, attr) for t in every]
        medians = " / ".join(f"{statistics.median(getattr(t, attr) for t in r):.2f}"
                             for r in rounds)
        print(f"{label:<28} {percentile(values, 0.5):>8.2f} {percentile(values, 0.99):>8.2f} "
              f"{max(values):>8.2f}   {medians}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
