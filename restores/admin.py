from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import RestoreLog


@admin.register(RestoreLog)
class RestoreLogAdmin(admin.ModelAdmin):
    list_display = ["id", "backup", "destination", "status", "started_at", "completed_at", "initiated_by"]
    list_filter = ["status", "restore_type"]
    list_select_related = ["backup", "destination"]
    search_fields = ["backup__backup_name", "destination__name", "error_message"]
    readonly_fields = [f.name for f in RestoreLog._meta.get_fields() if f.concrete]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RestoreLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RestoreLog | None = None) -> bool:
        return False  # the restore log is an audit trail
