from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html_join

from backups.admin.common import ManagedByFile

from . import services
from .cron import CronError, next_runs
from .models import BackupSchedule


@admin.register(BackupSchedule)
class BackupScheduleAdmin(ManagedByFile, admin.ModelAdmin):
    list_display = [
        "name",
        "target",
        "backup_type",
        "cron_expression",
        "timezone",
        "is_active",
        "last_run_at",
        "managed",
    ]
    list_filter = ["is_active", "backup_type", "target"]
    list_select_related = ["target"]
    search_fields = ["name", "target__name"]
    filter_horizontal = ["storages"]

    def save_model(self, request: HttpRequest, obj: BackupSchedule, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.sync_periodic_task(obj)

    def delete_model(self, request: HttpRequest, obj: BackupSchedule) -> None:
        pk = obj.pk
        super().delete_model(request, obj)
        services.remove_periodic_task(pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[BackupSchedule]) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        super().delete_queryset(request, queryset)
        for pk in pks:
            services.remove_periodic_task(pk)

    readonly_fields = [
        "upcoming_runs",
        "last_run_at",
        "next_run_at",
        "missed_since",
        "last_verify_at",
        "created_at",
        "updated_at",
    ]

    @admin.display(description="Next three runs")
    def upcoming_runs(self, obj: BackupSchedule) -> str:
        if not obj.cron_expression:
            return "-"
        try:
            runs = next_runs(obj.cron_expression, obj.timezone, timezone.now(), 3)
        except (CronError, ValueError, OSError) as exc:
            return f"cannot compute: {exc}"
        if not (obj.is_active and (obj.target_id is None or obj.target.is_active)):
            return "inactive: " + ", ".join(f"{run:%Y-%m-%d %H:%M %Z}" for run in runs)
        return format_html_join(", ", "{}", ((f"{run:%a %Y-%m-%d %H:%M %Z}",) for run in runs))
