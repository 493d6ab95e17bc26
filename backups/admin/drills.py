"""Restore drills in the admin: read only (drills are recorded by ``backup_drill`` and the
schedule, never typed in), scoped to the targets a tag-scoped user may see."""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from backups.admin.common import duration, status_badge, when
from backups.admin.scoping import ScopedByTarget
from backups.models import Drill

DRILL_FIELDS = (
    "target", "backup", "sandbox", "status", "trigger", "initiated_by", "started_at", "finished_at",
    "duration_seconds", "restore_seconds", "data_age_seconds", "scratch_name", "worker",
    "heartbeat_at", "pretty_checks", "error_message",
)  # fmt: skip


@admin.register(Drill)
class DrillAdmin(ScopedByTarget, admin.ModelAdmin):
    list_display = [
        "id",
        "target",
        "backup",
        "status_label",
        "started",
        "restore_time",
        "data_age",
        "checks_summary",
    ]
    list_filter = ["status", "trigger", "target"]
    search_fields = ["target__name", "error_message"]
    date_hierarchy = "started_at"
    list_select_related = ["target", "backup", "sandbox"]
    fields = DRILL_FIELDS
    readonly_fields = DRILL_FIELDS
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Drill | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Drill | None = None) -> bool:
        return False  # evidence: kept

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj: Drill) -> str:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="Started", ordering="started_at")
    def started(self, obj: Drill) -> str:
        return when(obj.started_at)

    @admin.display(description="Restore time", ordering="restore_seconds")
    def restore_time(self, obj: Drill) -> str:
        return duration(obj.restore_seconds)

    @admin.display(description="Data age", ordering="data_age_seconds")
    def data_age(self, obj: Drill) -> str:
        return duration(obj.data_age_seconds)

    @admin.display(description="Checks")
    def checks_summary(self, obj: Drill) -> str:
        checks = obj.checks or []
        passed = sum(1 for check in checks if check.get("ok"))
        return f"{passed}/{len(checks)} passed" if checks else "-"

    @admin.display(description="Checks")
    def pretty_checks(self, obj: Drill) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.checks, indent=2, ensure_ascii=False))
