from __future__ import annotations

from django.contrib import admin

from .models import BackupSchedule


@admin.register(BackupSchedule)
class BackupScheduleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "target",
        "backup_type",
        "cron_expression",
        "timezone",
        "is_active",
        "last_run_at",
    ]
    list_filter = ["is_active", "backup_type", "target"]
    list_select_related = ["target"]
    search_fields = ["name", "target__name"]
    filter_horizontal = ["storages"]
    readonly_fields = ["last_run_at", "next_run_at", "created_at", "updated_at"]
