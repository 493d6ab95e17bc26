from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from backups.admin.scoping import ScopedByTarget
from backups.humanize import human_bytes, human_duration, relative_time

from .models import RestoreLog, RestoreStatus


@admin.register(RestoreLog)
class RestoreLogAdmin(ScopedByTarget, admin.ModelAdmin):
    target_paths = ("destination", "backup__target")
    list_display = [
        "id", "backup", "destination", "status", "progress_bar", "started", "duration", "initiated_by",
    ]  # fmt: skip
    list_filter = ["status", "restore_type"]
    list_select_related = ["backup__target", "destination"]
    search_fields = ["backup__backup_name", "destination__name", "error_message"]
    # The bytes read show as a bar beside the status rather than as two raw numbers.
    fields = readonly_fields = (
        "id", "backup", "destination", "restore_type", "status", "progress_bar", "started_at", "completed_at",
        "tables_restored", "files_restored", "initiated_by", "confirmed_by", "reason", "decision",
        "expires_at", "notes", "error_message", "created_at",
    )  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RestoreLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RestoreLog | None = None) -> bool:
        return False  # the restore log is an audit trail

    @admin.display(description="Decision (four eyes)")
    def decision(self, obj: RestoreLog) -> str:
        if obj.status == RestoreStatus.AWAITING:
            return format_html(
                '<a href="{}">Awaiting approval: decide</a>', reverse("restores:decide", args=[obj.pk])
            )
        if not obj.decided_by:
            return "-"
        verdict = "Rejected" if obj.status == RestoreStatus.REJECTED else "Approved"
        return f"{verdict} by {obj.decided_by}" + (f": {obj.decision_note}" if obj.decision_note else "")

    @admin.display(description="Progress")
    def progress_bar(self, obj: RestoreLog) -> str:
        if obj.is_queued:
            return "queued: waiting for a worker"
        if not obj.total_bytes:
            return human_bytes(obj.progress)
        text = f"{human_bytes(obj.progress)} of {human_bytes(obj.total_bytes)} read (checksum pass, then restore)"
        return format_html(
            '<progress value="{}" max="{}">{}</progress> {}',
            min(obj.progress, obj.total_bytes),
            obj.total_bytes,
            text,
            text,
        )

    @admin.display(description="Started", ordering="started_at")
    def started(self, obj: RestoreLog) -> str:
        if obj.started_at is None:
            return "-"
        return format_html(
            '<span title="{}">{}</span>',
            f"{timezone.localtime(obj.started_at):%Y-%m-%d %H:%M:%S %Z}",
            relative_time(obj.started_at, timezone.now()),
        )

    @admin.display(description="Duration")
    def duration(self, obj: RestoreLog) -> str:
        if obj.started_at is None or obj.completed_at is None:
            return "-"
        return human_duration((obj.completed_at - obj.started_at).total_seconds())
