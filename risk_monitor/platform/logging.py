"""Structured JSON logging with secret redaction, the same in the CLI, the service and Dagster.

Every line is one JSON object: ``timestamp`` (UTC ISO 8601), ``level``, ``logger``, ``event``
and, when known, ``correlation_id`` and ``run_id`` (bound with :func:`log_context`). Secrets are
redacted three ways, because any one alone leaks: by key name, by value pattern (PEM blocks,
bearer tokens, JWTs, Slack tokens, signed query strings, long mixed-case keys) and by exact value
for every secret the settings resolved (:func:`register_secret`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

import structlog

REDACTED = "***"
LOG_LEVEL_ENV = "RISK_MONITOR_LOG_LEVEL"

_SECRET_KEY = re.compile(
    r"(secret|token|password|passphrase|api_?key|private_?key|authorization|signature|"
    r"credential|cookie|pem)",
    re.IGNORECASE,
)
_NOT_SECRET_KEY = re.compile(r"(_env|_env_var|_set|_configured|_source)$", re.IGNORECASE)

_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.DOTALL),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    re.compile(r"\bxox[abposre]-[A-Za-z0-9-]+"),
    re.compile(
        r"(?i)((?:api_?key|apikey|secret|token|signature|sign|password|passphrase)=)[^&\s\"']+"
    ),
    # long keys: mixed case and digits (hex digests and data versions are lower-case: kept)
    # (no "/" in the class: file paths are long and mixed-case but not secrets)
    re.compile(r"\b(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*\d)"
               r"[A-Za-z0-9_-]{32,}={0,2}"),
)



def _scoped(pattern: re.Pattern[str]) -> str:
    """``pattern`` as one branch of an alternation (its flags scoped to it)."""
    text = pattern.pattern.removeprefix("(?i)")
    flags = ("i" if pattern.flags & re.IGNORECASE else "") + (
        "s" if pattern.flags & re.DOTALL else "")
    return f"(?{flags}:{text})" if flags else f"(?:{text})"


#: any of :data:`_SECRET_PATTERNS`, searched once: most text (names, times, versions) has no
#: secret, and one search is ~6x cheaper than the six substitutions (audit payloads are
#: redacted string by string on the hot path's commit)
_ANY_SECRET_PATTERN = re.compile("|".join(_scoped(p) for p in _SECRET_PATTERNS))

_known_secrets: set[str] = set()
#: the same, longest first (a secret containing another is replaced whole)
_known_longest_first: tuple[str, ...] = ()
_known_lock = threading.Lock()
_configured = False


def register_secret(value: str | None) -> None:
    """Remember a resolved secret so its exact value is redacted wherever it turns up."""
    global _known_longest_first
    if value and len(value) >= 4:
        with _known_lock:
            _known_secrets.add(value)
            # PEM keys also appear with escaped newlines inside JSON / repr output
            if "\n" in value:
                _known_secrets.add(value.replace("\n", "\\n"))
            _clean_texts.clear()  # found clean of the secrets known before
            _known_longest_first = tuple(sorted(_known_secrets, key=len, reverse=True))


#: short texts found free of secrets (under the secrets known then: ``register_secret``
#: empties it): the hot path's audit payloads redact the same names, times and versions on
#: every change, and one pattern search costs ~8 µs where a set lookup costs ~0.1 µs
_clean_texts: set[str] = set()
_CLEAN_TEXTS_MAX = 4096
_CLEAN_TEXT_LEN = 256


def redact_text(text: str) -> str:
    """Remove every known secret and anything shaped like one from a string."""
    if not text or text in _clean_texts:
        return text
    known = _known_longest_first  # one tuple, swapped whole by register_secret
    found = text
    for secret in known:
        if secret in found:
            found = found.replace(secret, REDACTED)
    if _ANY_SECRET_PATTERN.search(found) is None:
        if found is text and len(text) <= _CLEAN_TEXT_LEN:
            _remember_clean(text, known)
        return found
    text = found
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:  # keep the "key=" prefix of a signed query string
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def _remember_clean(text: str, known: tuple[str, ...]) -> None:
    """Remember ``text`` as clean, unless a secret was registered since it was searched."""
    with _known_lock:
        if known is _known_longest_first:
            if len(_clean_texts) >= _CLEAN_TEXTS_MAX:
                _clean_texts.clear()
            _clean_texts.add(str(text))


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret (``api_key`` yes, ``api_key_env`` no); cached:
    the keys are the code's own names, few and met again and again."""
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)


def redact(value: Any, _depth: int = 0) -> Any:
    """Redact secrets from any JSON-like value, by key name and by value."""
    if _depth > 8:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                else redact(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return redact_text(str(value))


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {
        k: (v if k in ("timestamp", "level", "logger") else
            (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v)))
        for k, v in event_dict.items()
    }


def _rename_exception(_: Any, __: str, event_dict: MutableMapping[str, Any]
                      ) -> MutableMapping[str, Any]:
    exc = event_dict.pop("exception", None)
    if exc:
        event_dict["exception"] = redact_text(str(exc))
    return event_dict


_STRUCTURED = "_risk_monitor_json"


def _to_stdlib(_: Any, __: str, event_dict: MutableMapping[str, Any]
               ) -> tuple[tuple[str], dict[str, Any]]:
    """Hand stdlib a finished, redacted JSON line, so every handler (ours, Dagster's) sees it."""
    line = json.dumps(event_dict, default=str, ensure_ascii=False)
    return (line,), {"extra": {_STRUCTURED: True}}


_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message",
                                                                               "asctime"}


#: the attribute Dagster puts its event metadata under on a log record
DAGSTER_META = "dagster_meta"


def _dagster_fields(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, Mapping):
        return {}
    event = meta.get("dagster_event")
    fields = {"run_id": meta.get("run_id"), "job_name": meta.get("job_name"),
              "step_key": meta.get("step_key"),
              "dagster_event": getattr(event, "event_type_value", None)}
    return {k: v for k, v in fields.items() if v}


class JsonFormatter(logging.Formatter):
    """Renders any record as one JSON line; lines from our structlog loggers pass through."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _STRUCTURED, False):
            return record.getMessage()
        data: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace(
                "+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        data.update(structlog.contextvars.get_contextvars())
        for key, value in vars(record).items():
            if key == DAGSTER_META:  # Dagster's own objects: keep what identifies the event
                data.update(_dagster_fields(value))
            elif key not in _RESERVED and not key.startswith("_") and key not in data \
                    and key != "dagster_event":
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(_redact_processor(None, "", data), default=str, ensure_ascii=False)


def resolve_level(level: str | int | None = None) -> int:
    """Level from the argument, else ``RISK_MONITOR_LOG_LEVEL``, else INFO."""
    raw = level if level is not None else os.environ.get(LOG_LEVEL_ENV, "INFO")
    if isinstance(raw, int):
        return raw
    value = logging.getLevelName(raw.strip().upper())
    if not isinstance(value, int):
        from risk_monitor.platform.errors import ConfigError

        raise ConfigError(
            f"unknown log level {raw!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL",
            key=LOG_LEVEL_ENV,
        )
    return value


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("risk_monitor_json")
    return handler


def configure_logging(level: str | int | None = None, stream: IO[str] | None = None,
                      *, force: bool = False) -> None:
    """Install the JSON handler on the root logger once per process (idempotent)."""
    global _configured
    numeric = resolve_level(level)
    if not structlog.is_configured() or force:
        structlog.configure(
            processors=[
                # a level the logger does not log is dropped first, not rendered and then
                # dropped by stdlib (~0.13 ms of CPU per info line at WARNING: one per alert)
                structlog.stdlib.filter_by_level,
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
                structlog.stdlib.PositionalArgumentsFormatter(),
                structlog.processors.StackInfoRenderer(),
                structlog.processors.format_exc_info,
                _rename_exception,
                _redact_processor,
                _to_stdlib,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
    root = logging.getLogger()
    if force or not _configured or stream is not None:
        for handler in list(root.handlers):
            if handler.get_name() == "risk_monitor_json":
                root.removeHandler(handler)
        root.addHandler(json_handler(stream))
        _configured = True
    root.setLevel(numeric)
    logging.getLogger("risk_monitor").setLevel(numeric)
    # chatty libraries stay at WARNING unless we debug
    for noisy in ("urllib3", "asyncio", "websockets", "aiohttp.access", "grpc", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger; pass ``__name__`` so the ``logger`` field says where it logged."""
    return structlog.stdlib.get_logger(name)  # type: ignore[no-any-return]


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind ``correlation_id``, ``run_id`` (or any field) to every line logged inside."""
    clean = {k: v for k, v in fields.items() if v is not None}
    with structlog.contextvars.bound_contextvars(**clean):
        yield


#: Dagster events a person launching a run wants to see (Dagster logs them at DEBUG)
RUN_EVENTS_THAT_MATTER = frozenset({
    "RUN_START", "RUN_SUCCESS", "RUN_FAILURE", "STEP_FAILURE", "ASSET_MATERIALIZATION",
    "ASSET_CHECK_EVALUATION"})


class RunEventsThatMatter(logging.Filter):
    """Lets through records at ``level`` and above, plus the run events that matter (run
    start, assets materialised, checks passed or failed, the outcome), raised to INFO, each
    with its run id and the run's UI URL: ``dg launch`` and ``dagster asset materialize`` then say what happened
    without Dagster's ~40 debug events per run."""

    def __init__(self, level: int, dagster_ui_url: str) -> None:
        super().__init__()
        self.level = level
        self.ui = dagster_ui_url.rstrip("/")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        meta = getattr(record, DAGSTER_META, None) or {}
        event = meta.get("dagster_event") if isinstance(meta, Mapping) else None
        kind = getattr(event, "event_type_value", None)
        if kind not in RUN_EVENTS_THAT_MATTER:
            return False
        record.levelno, record.levelname = logging.INFO, "INFO"
        run_id = meta.get("run_id")
        if run_id:
            record.dagster_run_url = f"{self.ui}/runs/{run_id}"
        return True


def run_events_handler(min_level: str = "INFO", dagster_ui_url: str = "http://127.0.0.1:3000"
                       ) -> logging.Handler:
    """The Dagster instance's handler (``dagster.yaml`` ``python_logs``): every run, from
    ``dg launch``, ``dagster asset materialize``, the UI or a sensor, logs its id with its UI
    URL, the assets materialised, the checks and the outcome as JSON lines on stderr."""
    handler = json_handler()
    handler.set_name("risk_monitor_run_events")
    handler.addFilter(RunEventsThatMatter(resolve_level(min_level), dagster_ui_url))
    return handler
