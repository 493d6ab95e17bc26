"""The audit log in the admin: read-only for everyone, superusers included (the database refuses
changes anyway); and the site's "Delete selected" action, which also records what it deleted."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin import actions
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy

from backups.admin.common import when
from backups.models import AuditEvent
from backups.services import record_audit_deletions

EVENT_FIELDS = (
    "created_at", "action", "outcome", "user", "username", "auth_method", "address",
    "object_type", "object_id", "object_repr", "pretty_details",
)  # fmt: skip


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["when", "username", "auth_method", "address", "action", "object_label", "outcome"]
    list_filter = ["action", "outcome", "auth_method", "created_at"]
    search_fields = ["username", "object_repr", "object_id", "object_type"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]
    fields = EVENT_FIELDS
    readonly_fields = EVENT_FIELDS
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # events are recorded by what happens, never typed in

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False  # append-only, for superusers too

    @admin.display(description="When", ordering="created_at")
    def when(self, obj: AuditEvent) -> str:
        return when(obj.created_at)

    @admin.display(description="Object", ordering="object_type")
    def object_label(self, obj: AuditEvent) -> str:
        return obj.object_label or "-"

    @admin.display(description="Details")
    def pretty_details(self, obj: AuditEvent) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.details, indent=2, sort_keys=True, ensure_ascii=False)
        )


@admin.action(permissions=["delete"], description=gettext_lazy("Delete selected %(verbose_name_plural)s"))
def delete_selected(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Model]
) -> Any:
    """Django's own action; once it has deleted several objects, one object.delete event each
    (a single object is recorded from its LogEntry, which is saved one at a time)."""
    confirmed = [(obj.pk, str(obj)) for obj in queryset] if request.POST.get("post") else []
    response: HttpResponse | None = actions.delete_selected(modeladmin, request, queryset)
    if response is None and len(confirmed) > 1:
        record_audit_deletions(request, queryset.model, confirmed)
    return response


admin.site.add_action(delete_selected, "delete_selected")
