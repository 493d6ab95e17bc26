"""django-celery-beat's models (the beat projection of BackupSchedule) for superusers only:
staff manage schedules through BackupSchedule; the dashboard lists these under "Advanced"."""

from __future__ import annotations

from typing import Any

import django_celery_beat.admin  # noqa: F401  (its registrations first, whoever imports this module first)
from django.apps import apps
from django.contrib import admin
from django.http import HttpRequest

ADVANCED_APP = "django_celery_beat"


def _superusers_only(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    class SuperusersOnly(admin_class):  # type: ignore[valid-type, misc]
        def has_module_permission(self, request: HttpRequest) -> bool:
            return bool(request.user.is_superuser)

        def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            return bool(request.user.is_superuser)

        def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
            return bool(request.user.is_superuser)

        def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            return bool(request.user.is_superuser)

        def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            return bool(request.user.is_superuser)

    SuperusersOnly.__name__ = f"SuperusersOnly{admin_class.__name__}"
    return SuperusersOnly


def restrict_advanced_models(site: admin.AdminSite) -> None:
    apps.get_app_config(ADVANCED_APP).verbose_name = "Celery beat (advanced)"
    for model, model_admin in list(site._registry.items()):
        if model._meta.app_label == ADVANCED_APP:
            site.unregister(model)
            site.register(model, _superusers_only(type(model_admin)))


restrict_advanced_models(admin.site)
