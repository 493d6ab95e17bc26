"""The Celery application. Broker and options come from Django settings (``CELERY_*``).

The settings are loaded here, when the worker or beat imports this module: a value they refuse
(``DEBUG=maybe``) ends the process with that one line and status 2, as ``manage.py`` does, not a
traceback from deep inside Celery's start-up."""

from __future__ import annotations

import os
import sys

from celery import Celery
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")

try:
    settings.INSTALLED_APPS  # noqa: B018  (loads the settings)
except ImproperlyConfigured as exc:
    sys.stderr.write(f"Backupsite cannot start: {exc}\n")
    raise SystemExit(2) from None

app = Celery("backupsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
