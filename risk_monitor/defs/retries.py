"""Step retry policies: a blip of a venue, a custodian or PostgreSQL must not fail a run.

Dagster retries a failed step under its ``RetryPolicy``, except for a ``dg.Failure`` raised with
``allow_retries=False``. Every asset body and the IO manager raise our errors through
:func:`risk_monitor.defs.failures.surfaced_errors`, which sets ``allow_retries`` from the
error's own retryability (decided once, in ``risk_monitor.adapters.errors.map_exception``): a
connection refused or a timeout is retried with backoff, a refused credential or an invalid
limit document fails at once.

Backoff is exponential with jitter (so parallel runs hitting the same restarted database do
not retry in lock step): Dagster waits (2^n - 1) s ± 1 s before retry n, i.e. 0-2 s, 2-4 s,
6-8 s. Three retries (about 10 s in all) cover a PostgreSQL restart or failover of a few
seconds and keep a hopeless step from holding a run for long; the schedule evaluates again
within a minute either way.
"""

import dagster as dg

#: collection steps (venues, custodians, the Redis quote cache) and store steps (PostgreSQL)
STEP_RETRY = dg.RetryPolicy(max_retries=3, delay=1.0, backoff=dg.Backoff.EXPONENTIAL,
                            jitter=dg.Jitter.PLUS_MINUS)
