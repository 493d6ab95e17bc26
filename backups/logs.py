"""Structured logs: the run context of a log line, and the JSON formatter of ``LOG_FORMAT=json``.

The context (a backup run's id, its target and current step; a restore's id) lives in a
:class:`~contextvars.ContextVar`, set by :func:`log_context` around the work and read by
:class:`JsonFormatter` when a line is written, so no ``logger`` call has to pass it. A log line
is written in the thread that logs it, so lines logged by a run's own background threads (the
streaming writers, the heartbeat) carry no context: a new thread starts with an empty one.

Standard library only: ``settings.LOGGING`` names the formatter by its dotted path, and the
Celery worker and beat install it on their own handlers (``backupsite/celery.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType

_context: ContextVar[Mapping[str, object]] = ContextVar(
    "backupsite_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(*, keep_on_error: bool = False, **values: object) -> Iterator[None]:
    """Add ``values`` (e.g. ``backup_id=7, target="app-db"``) to the context of every line
    logged inside the block, in this thread. On exit the context is as before the block, except
    with ``keep_on_error`` when the block raises inside another one: the values then stay until
    that enclosing block ends, so the lines that report the failure still name, e.g., the step
    it happened in (a run's step, kept until the run's own block ends)."""
    enclosing = _context.get()
    token = _context.set(MappingProxyType({**enclosing, **values}))
    try:
        yield
    except BaseException:
        if not (keep_on_error and enclosing):
            _context.reset(token)
        raise
    _context.reset(token)


def current_context() -> dict[str, object]:
    """The context of a line logged here and now (a copy)."""
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``process``,
    ``message``, the context of :func:`log_context` (``backup_id``, ``target``, ``step``,
    ``restore_id``) when there is one, and ``exception`` (the traceback as one string) when the
    line carries one. A newline inside a value is escaped, so a line is always one record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
            **_context.get(),
        }
        # A redacting filter may already have rendered (and masked) the traceback into exc_text.
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
