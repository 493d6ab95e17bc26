"""Admin pages for the history: backups with their step timelines and copies, and downloads."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from backups.admin.common import status_badge
from backups.cli import human_bytes
from backups.models import Backup, BackupCopy, BackupDownload, BackupStatus, BackupStep


class BackupStepInline(admin.TabularInline):
    model = BackupStep
    extra = 0
    can_delete = False
    fields = ["name", "status_label", "started_at", "duration", "size", "message"]
    readonly_fields = ["name", "status_label", "started_at", "duration", "size", "message"]
    verbose_name_plural = "Step timeline"

    def has_add_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False

    @admin.display(description="Status")
    def status_label(self, obj: BackupStep) -> str:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="Duration")
    def duration(self, obj: BackupStep) -> str:
        return "-" if obj.duration_seconds is None else f"{obj.duration_seconds:.2f}s"

    @admin.display(description="Bytes")
    def size(self, obj: BackupStep) -> str:
        return human_bytes(obj.bytes) if obj.bytes is not None else "-"


COPY_FIELDS = (
    "storage", "path", "size", "etag", "version", "status", "error_message", "created_at", "deleted_at",
)  # fmt: skip


class BackupCopyInline(admin.TabularInline):
    model = BackupCopy
    extra = 0
    can_delete = False
    fields = COPY_FIELDS
    readonly_fields = COPY_FIELDS
    verbose_name_plural = "Stored copies"

    def has_add_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False


@admin.register(Backup)
class BackupAdmin(admin.ModelAdmin):
    list_display = [
        "id", "target", "backup_type", "status_label", "started_at", "duration", "stored_size",
        "verified", "initiated_by", "download",
    ]  # fmt: skip
    list_filter = ["status", "backup_type", "verified", "compression", "target"]
    actions = ["download_selected"]
    list_select_related = ["target", "schedule"]
    search_fields = ["backup_name", "file_path", "target__name", "error_message", "checksum"]
    date_hierarchy = "created_at"
    inlines = [BackupStepInline, BackupCopyInline]
    readonly_fields = [f.name for f in Backup._meta.get_fields() if f.concrete and not f.many_to_many]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "target",
                    "schedule",
                    "backup_type",
                    "backup_name",
                    "status",
                    "error_message",
                    "notes",
                ]
            },
        ),
        ("Timing", {"fields": ["started_at", "completed_at", "duration_seconds", "progress"]}),
        (
            "Stored file",
            {
                "fields": [
                    "file_path",
                    "file_size",
                    "raw_size",
                    "checksum",
                    "compression",
                    "encryption",
                    "encryption_key_id",
                    "download",
                ]
            },
        ),
        ("Contents", {"fields": ["tables_included", "files_included", "engine_info", "fingerprint"]}),
        (
            "Verification and retention",
            {"fields": ["verified", "verified_at", "retention_days", "expires_at", "deleted_at"]},
        ),
        ("Audit", {"fields": ["initiated_by", "created_at"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # backups are made by runs, never typed in

    def has_change_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False  # deleting a row would orphan its stored files: retention deletes, and keeps the row

    def get_queryset(self, request: HttpRequest) -> QuerySet[Backup]:
        self._can_download = request.user.has_perm("backups.download_backup")
        return super().get_queryset(request).select_related("target", "schedule")

    def get_readonly_fields(self, request: HttpRequest, obj: Backup | None = None) -> list[str]:
        self._can_download = request.user.has_perm("backups.download_backup")
        return [*self.readonly_fields, "download"]

    def has_download_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("backups.download_backup"))

    @admin.action(description="Download the selected backup", permissions=["download"])
    def download_selected(
        self, request: HttpRequest, queryset: QuerySet[Backup]
    ) -> HttpResponseRedirect | None:
        """One backup at a time: the browser is sent to its download view (stream or signed URL)."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one backup to download.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("backups:download", args=[queryset.get().pk]))

    @admin.display(description="Download")
    def download(self, obj: Backup) -> str:
        if not getattr(self, "_can_download", False) or obj.status != BackupStatus.SUCCESS or obj.deleted_at:
            return "-"
        return format_html('<a href="{}">download</a>', reverse("backups:download", args=[obj.pk]))

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj: Backup) -> str:
        label = "Deleted" if obj.deleted_at else obj.get_status_display()
        return status_badge(obj.status, label)

    @admin.display(description="Duration", ordering="duration_seconds")
    def duration(self, obj: Backup) -> str:
        return "-" if obj.duration_seconds is None else f"{obj.duration_seconds:.1f}s"

    @admin.display(description="Size", ordering="file_size")
    def stored_size(self, obj: Backup) -> str:
        return human_bytes(obj.file_size)


@admin.register(BackupDownload)
class BackupDownloadAdmin(admin.ModelAdmin):
    list_display = ["created_at", "backup", "username", "storage", "method", "remote_addr"]
    list_filter = ["method", "storage"]
    list_select_related = ["backup", "storage"]
    search_fields = ["username", "backup__backup_name"]
    readonly_fields = ["backup", "storage", "user", "username", "method", "remote_addr", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BackupDownload | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BackupDownload | None = None) -> bool:
        return False  # the audit trail of who took a copy of the data
