"""The Celery application. Broker and options come from Django settings (``CELERY_*``).

The settings are loaded here, when the worker or beat imports this module: a value they refuse
(``DEBUG=maybe``) ends the process with that one line and status 2, as ``manage.py`` does, not a
traceback from deep inside Celery's start-up."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger
from celery.utils.log import get_multiprocessing_logger
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")

try:
    settings.INSTALLED_APPS  # noqa: B018  (loads the settings)
except ImproperlyConfigured as exc:
    sys.stderr.write(f"Backupsite cannot start: {exc}\n")
    raise SystemExit(2) from None

if settings.LOG_FORMAT == "json":
    # Python's warnings become log records, so JSON lines too: the worker warns (e.g. that it runs
    # as root) before it sets up its own logging, which would capture them only from then on.
    logging.captureWarnings(True)

app = Celery("backupsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# The worker and beat replace the root logger's handlers with their own (worker_hijack_root_logger),
# so settings.LOGGING's console handler is gone there. Celery's handlers get what it carried: its
# filters (the secret redaction) always, and with LOG_FORMAT=json its formatter; with the plain
# format Celery's own line format stays ("[time: LEVEL/process] message").
@after_setup_logger.connect
@after_setup_task_logger.connect
def apply_django_logging(logger: logging.Logger, **_: Any) -> None:
    """Give the handlers Celery just installed on ``logger`` (the root logger, with the pool's
    multiprocessing logger, or the task logger) the console handler's filters and formatter."""
    config: dict[str, Any] = settings.LOGGING
    console = config["handlers"]["console"]
    handlers = list(logger.handlers)
    pool_logger = get_multiprocessing_logger() if logger is logging.getLogger() else None
    if pool_logger is not None:
        handlers += pool_logger.handlers
    for handler in handlers:
        for name in console["filters"]:
            wanted = _build(config["filters"][name])
            # A pool process sets up again, over handlers it may have inherited: add each once.
            if not any(isinstance(present, type(wanted)) for present in handler.filters):
                handler.addFilter(wanted)
        if settings.LOG_FORMAT == "json":
            handler.setFormatter(_build(config["formatters"]["json"]))


def _build(spec: dict[str, Any]) -> Any:
    """A filter or formatter of settings.LOGGING, given as ``{"()": "dotted.path", **options}``."""
    options = dict(spec)
    return import_string(options.pop("()"))(**options)
