"""Backupsite: the Django project package (settings, urls, wsgi/asgi, celery)."""

from __future__ import annotations

__version__ = "0.1.0"
