"""Admin pages for the history: backups with their step timelines and copies, and downloads."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from backups.admin.common import duration, size, status_badge, when
from backups.admin.scoping import ScopedByTarget
from backups.models import Backup, BackupCopy, BackupDownload, BackupStatus, BackupStep, CopyStatus, Proof
from backups.services import can, can_somewhere, describe_keys

COPY_MARKS: dict[str, str] = {
    CopyStatus.STORED: "✓",
    CopyStatus.FAILED: "✗",
    CopyStatus.PENDING: "…",
    CopyStatus.DELETED: "deleted",
}


class BackupStepInline(admin.TabularInline):
    model = BackupStep
    extra = 0
    can_delete = False
    fields = readonly_fields = ("name", "status_label", "started", "duration_label", "size_label", "message")
    verbose_name_plural = "Step timeline"

    def has_add_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False

    @admin.display(description="Status")
    def status_label(self, obj: BackupStep) -> str:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="Started")
    def started(self, obj: BackupStep) -> str:
        return when(obj.started_at)

    @admin.display(description="Duration")
    def duration_label(self, obj: BackupStep) -> str:
        return duration(obj.duration_seconds)

    @admin.display(description="Bytes")
    def size_label(self, obj: BackupStep) -> str:
        return size(obj.bytes)


class BackupCopyInline(admin.TabularInline):
    model = BackupCopy
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "storage", "path", "size_label", "etag", "version", "status", "error_message", "created",
        "deleted",
    )  # fmt: skip
    verbose_name_plural = "Stored copies"

    def has_add_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False

    @admin.display(description="Size")
    def size_label(self, obj: BackupCopy) -> str:
        return size(obj.size)

    @admin.display(description="Created")
    def created(self, obj: BackupCopy) -> str:
        return when(obj.created_at)

    @admin.display(description="Deleted")
    def deleted(self, obj: BackupCopy) -> str:
        return when(obj.deleted_at)


@admin.register(Backup)
class BackupAdmin(ScopedByTarget, admin.ModelAdmin):
    list_display = [
        "id", "target", "backup_type", "status_label", "started", "duration_label", "stored_size",
        "copies_label", "verified", "initiated_by",
    ]  # fmt: skip
    # Dates as a filter (today, past 7 days, this month, this year): a range on the index of
    # the list's order. A date hierarchy would list the years, months or days that hold a
    # backup with a DISTINCT over every row of the catalog, on each request.
    list_filter = ["status", "backup_type", "verified", "compression", "created_at", "target"]
    ordering = ["-created_at", "-id"]  # newest first (the backup_created_idx index)
    actions = ["download_selected"]
    list_select_related = ["target"]
    search_fields = ["backup_name", "file_path", "target__name", "error_message", "checksum"]
    # A filtered list says "N results (Show all)": no second COUNT(*) over the whole catalog.
    show_full_result_count = False
    inlines = [BackupStepInline, BackupCopyInline]
    readonly_fields = [
        *(f.name for f in Backup._meta.get_fields() if f.concrete and not f.many_to_many),
        "started", "completed", "duration_label", "progress_size", "stored_size", "raw_size_label",
        "verified_when", "expires", "deleted", "created", "encryption_label", "proof_label",
    ]  # fmt: skip
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
        ("Timing", {"fields": ["started", "completed", "duration_label", "progress_size"]}),
        (
            "Stored file",
            {
                "fields": [
                    "file_path",
                    "stored_size",
                    "raw_size_label",
                    "checksum",
                    "compression",
                    "encryption_label",
                ]
            },
        ),
        ("Contents", {"fields": ["tables_included", "files_included", "engine_info", "fingerprint"]}),
        (
            "Verification and retention",
            {"fields": ["proof_label", "verified", "verified_when", "retention_days", "expires", "deleted"]},
        ),
        ("Audit", {"fields": ["initiated_by", "created"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # backups are made by runs, never typed in

    @admin.display(description="Encryption")
    def encryption_label(self, obj: Backup) -> str:
        if obj.encryption == "none":
            return "none: stored unencrypted"
        return f"{obj.encryption}, to {describe_keys(obj)}"

    def has_change_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False  # deleting a row would orphan its stored files: retention deletes, and keeps the row

    def get_queryset(self, request: HttpRequest) -> QuerySet[Backup]:
        # The copies column of every row in one query, whatever the page size.
        copies = BackupCopy.objects.select_related("storage").order_by("storage__name")
        return (
            super()
            .get_queryset(request)
            .select_related("target", "schedule")
            .prefetch_related(Prefetch("copies", queryset=copies))
        )

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        if not can_somewhere(request.user, "download"):
            return list(self.list_display)

        @admin.display(description="Download")
        def download(obj: Backup) -> str:
            if not downloadable(obj) or not can(request.user, "download", obj.target):
                return "-"
            return format_html('<a href="{}">download</a>', reverse("backups:download", args=[obj.pk]))

        return [*self.list_display, download]

    def has_download_permission(self, request: HttpRequest) -> bool:
        return can_somewhere(request.user, "download")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Backup | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["operations"] = self.operations(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def operations(self, request: HttpRequest, obj: Backup) -> dict[str, str]:
        """The object tools this user may use on this backup: URL by name, absent otherwise."""
        found: dict[str, str] = {}
        user = request.user
        if (
            can(user, "verify", obj.target)
            and obj.deleted_at is None
            and obj.status in (BackupStatus.SUCCESS, BackupStatus.CORRUPT)
        ):
            found["verify_url"] = reverse("backups:verify", args=[obj.pk])
        if can(user, "download", obj.target) and downloadable(obj):
            found["download_url"] = reverse("backups:download", args=[obj.pk])
        if can(user, "restore", obj.target) and obj.status == BackupStatus.SUCCESS and obj.deleted_at is None:
            found["restore_url"] = reverse("restores:restore", args=[obj.pk])
            if obj.target.engine in ("postgresql", "mysql", "mariadb"):  # restores.provisioning's
                found["provision_url"] = reverse("restores:provision", args=[obj.pk])
        if can(user, "view", obj.target):
            found["retention_url"] = (
                reverse("admin:backups_target_change", args=[obj.target_id]) + "#retention-preview"
            )
        return found

    @admin.action(description="Download the selected backup", permissions=["download"])
    def download_selected(
        self, request: HttpRequest, queryset: QuerySet[Backup]
    ) -> HttpResponseRedirect | None:
        """One backup at a time: the browser is sent to its download view (stream or signed URL)."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one backup to download.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("backups:download", args=[queryset.get().pk]))

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj: Backup) -> str:
        label = "Deleted" if obj.deleted_at else obj.get_status_display()
        return status_badge(obj.status, label)

    @admin.display(description="Started", ordering="started_at")
    def started(self, obj: Backup) -> str:
        return when(obj.started_at)

    @admin.display(description="Completed")
    def completed(self, obj: Backup) -> str:
        return when(obj.completed_at)

    @admin.display(description="Duration", ordering="duration_seconds")
    def duration_label(self, obj: Backup) -> str:
        return duration(obj.duration_seconds)

    @admin.display(description="Dumped so far")
    def progress_size(self, obj: Backup) -> str:
        return size(obj.progress)

    @admin.display(description="Size", ordering="file_size")
    def stored_size(self, obj: Backup) -> str:
        return size(obj.file_size)

    @admin.display(description="Size before compression")
    def raw_size_label(self, obj: Backup) -> str:
        return size(obj.raw_size)

    @admin.display(description="Copies")
    def copies_label(self, obj: Backup) -> str:
        copies = obj.copies.all()  # prefetched with their storages by get_queryset
        if not copies:
            return "-"
        return format_html_join(
            ", ",
            '<span title="{}">{} {}</span>',
            (
                (
                    copy.error_message or copy.get_status_display(),
                    copy.storage.name,
                    COPY_MARKS.get(copy.status, copy.status),
                )
                for copy in copies
            ),
        )

    @admin.display(description="Proof")
    def proof_label(self, obj: Backup) -> str:
        """``drilled, 2 d ago`` with what the level means: how far it is proven restorable."""
        if not obj.proof:
            return "none (not a successful backup)" if obj.status != BackupStatus.SUCCESS else "none"
        return format_html(
            '{}, {}<div class="help">{}</div>',
            obj.proof,
            when(obj.proof_at),
            Proof(obj.proof).label,
        )

    @admin.display(description="Verified at")
    def verified_when(self, obj: Backup) -> str:
        return when(obj.verified_at)

    @admin.display(description="Expires")
    def expires(self, obj: Backup) -> str:
        return when(obj.expires_at)

    @admin.display(description="Files deleted by retention")
    def deleted(self, obj: Backup) -> str:
        return when(obj.deleted_at)

    @admin.display(description="Created")
    def created(self, obj: Backup) -> str:
        return when(obj.created_at)


def downloadable(backup: Backup) -> bool:
    return backup.status == BackupStatus.SUCCESS and backup.deleted_at is None


@admin.register(BackupDownload)
class BackupDownloadAdmin(admin.ModelAdmin):
    list_display = ["created", "backup", "username", "storage", "method", "remote_addr"]
    list_filter = ["method", "storage"]
    list_select_related = ["backup", "storage"]
    ordering = ["-created_at", "-id"]
    search_fields = ["username", "backup__backup_name"]
    readonly_fields = ["backup", "storage", "user", "username", "method", "remote_addr", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BackupDownload | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BackupDownload | None = None) -> bool:
        return False  # the audit trail of who took a copy of the data

    @admin.display(description="When", ordering="created_at")
    def created(self, obj: BackupDownload) -> str:
        return when(obj.created_at)
