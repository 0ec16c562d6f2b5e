"""Turn our errors into Dagster failures that carry the error code, source and retryability.

An asset body runs inside :func:`surfaced_errors`: a ``RiskMonitorError`` (or any library error,
through the mapper) is counted in ``risk_monitor_errors_total``, logged once with its code, and
re-raised as ``dg.Failure`` whose metadata the UI shows next to the failed step.
"""

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import dagster as dg

from risk_monitor.adapters.errors import map_exception
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error

log = get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def as_failure(error: RiskMonitorError) -> dg.Failure:
    metadata = {k: v for k, v in error.as_metadata().items()
                if isinstance(v, str | int | float | bool)}
    return dg.Failure(description=str(error), metadata=metadata,
                      allow_retries=error.retryable)


@contextmanager
def surfaced_errors(source: str) -> Iterator[None]:
    """Run an asset body; failures leave with code, source and retryability attached."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as exc:
        error = exc if isinstance(exc, RiskMonitorError) else map_exception(exc, source=source)
        record_error(error)
        log.error("asset_failed", error_code=error.code, source=error.source or source,
                  retryable=error.retryable, error=str(error))
        raise as_failure(error) from exc


def surface_errors(source: str) -> Callable[[F], F]:
    """Decorator form of :func:`surfaced_errors` for asset functions (plain or generators).

    Put it under ``@dg.asset``; the signature Dagster inspects is preserved.
    """

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                with surfaced_errors(source):
                    yield from fn(*args, **kwargs)

            return cast(F, generator)

        @functools.wraps(fn)
        def plain(*args: Any, **kwargs: Any) -> Any:
            with surfaced_errors(source):
                return fn(*args, **kwargs)

        return cast(F, plain)

    return decorate
