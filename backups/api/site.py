"""The API object: /api/v1/ (mounted by backupsite/urls.py, which also adds the routers of the
apps built on backups: restores and schedules)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja import NinjaAPI
from ninja.openapi.docs import Swagger
from ninja.openapi.views import openapi_json

from backupsite import __version__

from . import downloads, errors, health, history, targets
from .auth import TokenAuth


def docs_for_staff(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """ninja's docs_decorator, given both the schema's view and the docs page's: the schema
    (paths and shapes, no data) stays open to scripts; the interactive page asks for an admin
    login."""
    if getattr(view, "func", None) is openapi_json:
        return view
    decorated: Callable[..., HttpResponse] = staff_member_required(view)
    return decorated


class BundledSwagger(Swagger):
    """Swagger UI from django-ninja's bundled template and static files (the settings add their
    directories), without "ninja" in INSTALLED_APPS, which ninja's own page asks for before it
    stops using a CDN: as an app, ninja would be imported by every process at start."""

    def render_page(self, request: HttpRequest, api: Any, **kwargs: Any) -> HttpResponse:
        self.settings["url"] = self.get_openapi_url(api, kwargs)
        context = {"swagger_settings": json.dumps(self.settings, indent=1), "api": api, "add_csrf": False}
        return render(request, self.template, context)  # bearer tokens: no CSRF token to add


api = NinjaAPI(
    title="Backupsite",
    version="v1",
    description=f"Backupsite {__version__}: targets, backups, restores and schedules. "
    "Authenticate with a personal API token: `Authorization: Bearer TOKEN` (docs/API.md).",
    urls_namespace="api-v1",
    auth=TokenAuth(),
    docs=BundledSwagger(),
    docs_url="/docs",
    openapi_url="/openapi.json",
    docs_decorator=docs_for_staff,
)
errors.install(api)
api.add_router("/health", health.router)
api.add_router("/targets", targets.router)
api.add_router("/backups", history.router)
api.add_router("/", downloads.router)
