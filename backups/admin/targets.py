"""Admin pages for what is backed up and where: targets and storages."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from backups.admin.common import PluginOptionsForm, status_badge
from backups.admin.retention import retention_preview
from backups.models import BackupStatus, Storage, Target
from backups.services import storage_class


class StorageForm(PluginOptionsForm):
    class Meta:
        model = Storage
        fields = ["name", "kind", "options", "prefix", "required"]

    def plugin_class(self, kind: str) -> Any:
        return storage_class(kind)


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
