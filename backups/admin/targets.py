"""Admin pages for what is backed up and where: targets and storages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from backups.admin.common import status_badge
from backups.admin.retention import retention_preview
from backups.models import BackupStatus, Storage, Target
from backups.services import StorageError, option_problems, storage_class


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
