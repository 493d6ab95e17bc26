"""The Django admin is Backupsite's UI: targets, storages and the history with step timelines."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from . import secrets
from .admin_retention import retention_preview
from .cli import human_bytes
from .models import Backup, BackupCopy, BackupDownload, BackupStatus, BackupStep, Storage, Target
from .storages import StorageError, storage_class

STATUS_COLOURS: dict[str, str] = {
    BackupStatus.SUCCESS: "#2e7d32",
    BackupStatus.FAILED: "#c62828",
    BackupStatus.CORRUPT: "#c62828",
    BackupStatus.RUNNING: "#1565c0",
    BackupStatus.SKIPPED: "#757575",
    BackupStatus.PENDING: "#757575",
}


def status_badge(status: str, label: str) -> str:
    return format_html('<strong style="color:{}">{}</strong>', STATUS_COLOURS.get(status, "inherit"), label)


def option_problems(cls: Any, options: dict[str, Any]) -> list[tuple[str, str]]:
    """A storage or notifier kind's own option rules, plus: secrets only as references."""
    problems: list[tuple[str, str]] = cls.validate_options(options)
    for key, spec in cls.OPTIONS.items():
        value = options.get(key)
        if spec.secret and isinstance(value, str) and not secrets.is_reference_only(value):
            problems.append((key, "write secrets as ${ENV_VAR} or ${file:/path}; plaintext is refused"))
    return problems


class StorageForm(forms.ModelForm):
    class Meta:
        model = Storage
        fields = ["name", "kind", "options", "prefix", "required"]

    def clean(self) -> dict[str, Any]:
        """The kind's own option rules; secrets only as references. Nothing is saved otherwise."""
        cleaned = super().clean() or {}
        kind, options = cleaned.get("kind"), cleaned.get("options")
        if not kind or not isinstance(options, dict):
            if options is not None and not isinstance(options, dict):
                self.add_error("options", "must be a JSON object of option names to values")
            return cleaned
        try:
            cls = storage_class(kind)
        except (StorageError, ImportError) as exc:
            self.add_error("kind", str(exc))
            return cleaned
        for key, message in option_problems(cls, options):
            self.add_error("options", f"{key}: {message}")
        return cleaned


@admin.register(Storage)
class StorageAdmin(admin.ModelAdmin):
    form = StorageForm
    list_display = ["name", "kind", "location", "prefix", "required", "updated_at"]
    list_filter = ["kind", "required"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description="Location")
    def location(self, obj: Storage) -> str:
        return str(obj.options.get("path") or obj.options.get("bucket") or obj.options.get("host") or "")


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    list_display = ["name", "engine", "source", "compression", "is_active", "last_backup"]
    list_filter = ["engine", "is_active"]
    search_fields = ["name", "host", "database"]
    filter_horizontal = ["storages"]
    readonly_fields = ["created_at", "updated_at", "retention_plan"]
    fieldsets = [
        (None, {"fields": ["name", "engine", "is_active", "storages", "compression", "skip_unchanged"]}),
        ("Source", {"fields": ["host", "port", "database", "user", "password", "paths", "timezone"]}),
        ("Configuration backups", {"fields": ["config_paths"]}),
        ("Selection", {"fields": ["include_tables", "exclude_tables", "options"], "classes": ["collapse"]}),
        ("Retention", {"fields": ["retention", "retention_plan"]}),
        ("Verification", {"fields": ["sandbox"]}),
        ("Audit", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="What the policy keeps")
    def retention_plan(self, obj: Target) -> str:
        return retention_preview(obj)

    @admin.display(description="Source")
    def source(self, obj: Target) -> str:
        if obj.engine == "files":
            return ", ".join(obj.paths)
        return f"{obj.host}:{obj.port}/{obj.database}" if obj.host else obj.database

    @admin.display(description="Last backup")
    def last_backup(self, obj: Target) -> str:
        backup = obj.backups.exclude(status=BackupStatus.PENDING).order_by("-created_at").first()
        if backup is None:
            return "never"
        when = backup.started_at or backup.created_at
        return status_badge(backup.status, f"{backup.get_status_display()} {when:%Y-%m-%d %H:%M}")


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


from . import admin_notifications  # noqa: E402, F401  (registers Notifier and Notification)
