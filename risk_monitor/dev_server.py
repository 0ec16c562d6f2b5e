"""``risk-monitor dev``: run ``dagster dev`` as a child and stop it, with all of its children,
within seconds of SIGINT or SIGTERM.

``dagster dev`` starts a webserver, a daemon and code servers. Signalled directly it could take
minutes to go (or ignore SIGTERM); here it runs in its own process group, a signal is forwarded
to the whole group, and what is still alive after :data:`GRACE_S` is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from types import FrameType

#: time the Dagster processes get to stop on their own before they are killed
GRACE_S = 6.0


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, signum)


def run_supervised(command: Sequence[str], grace_s: float = GRACE_S) -> int:
    """Run ``command`` in its own process group until it exits or this process is asked to
    stop; returns its exit code (128 + signal number when stopped by a signal)."""
    process = subprocess.Popen(list(command), start_new_session=True)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while process.poll() is None and not stop.wait(0.2):
            pass
        if process.poll() is not None and not received:
            return process.returncode
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        _signal_group(process.pid, signal.SIGKILL)  # children that outlived their parent too
        process.wait()
        return 128 + received[0]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
