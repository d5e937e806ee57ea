"""Log lines that say which request or task they belong to.

Every line written while a request is served carries its `request_id` (MD-Request-Id); every
line written by a task carries the primary keys of what the task works on (`event_pk`,
`delivery_pks` or `recovery_pk`: deliveries.tasks). Production writes one JSON object per line;
local runs write readable text.
"""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

current_request_id: ContextVar[str] = ContextVar("current_request_id", default="-")
current_task_context: ContextVar[dict[str, Any] | None] = ContextVar(
    "current_task_context", default=None
)

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "context",
}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Adds `fields` to every log line written inside the block (tasks use it)."""
    token = current_task_context.set({**(current_task_context.get() or {}), **fields})
    try:
        yield
    finally:
        current_task_context.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        context = current_task_context.get() or {}
        record.context = " ".join(f"{k}={v}" for k, v in context.items())
        for key, value in context.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# The largest integer JSON readers take exactly: most (JavaScript, jq) read numbers as doubles
# (RFC 8259, section 6). Event ids are past it: a day's partition starts at day * 10**12
# (deliveries.partitions), about 2 * 10**16.
_EXACT_IN_JSON = 2**53 - 1


def _json_exact(value: Any) -> Any:
    """`value` with every integer past what JSON readers take exactly written as a string, so
    that a log search for an event's id finds it (lists and dicts looked into)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _EXACT_IN_JSON:
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_exact(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_exact(item) for key, item in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, extra fields, traceback.
    Integers too large for JSON readers to take exactly are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = _json_exact(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
