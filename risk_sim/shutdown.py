"""Quick, quiet shutdown of a :class:`BackgroundServer` that may hold hung requests.

A simulator in "hang" or "timeout" mode keeps request handlers asleep for up to minutes; aiohttp's
cleanup then waits its shutdown timeout and the loop closes with tasks still pending (warnings at
exit). Cancelling them first makes ``stop()`` immediate and silent.
"""

from __future__ import annotations

import asyncio
import contextlib

from risk_sim.server import BackgroundServer


def cancel_pending_requests(server: BackgroundServer, timeout: float = 2.0) -> None:
    """Cancel every task on the server's loop (hung handlers included) and wait for them."""
    loop = server.loop
    if loop is None or not loop.is_running():
        return

    async def cancel_all() -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    with contextlib.suppress(TimeoutError, RuntimeError):  # best effort: stop() still closes
        server.call(cancel_all, timeout=timeout + 1.0)
