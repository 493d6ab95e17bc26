"""Notification channels and every delivery in the admin: channels are edited with their kind's
own option rules (secrets only as references); deliveries are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from backups.admin.common import ManagedByFile, PluginOptionsForm, when
from backups.models import Notification, NotificationStatus, Notifier
from backups.services import notifier_class

STATUS_COLOURS: dict[str, str] = {
    NotificationStatus.SENT: "#2e7d32",
    NotificationStatus.FAILED: "#c62828",
    NotificationStatus.PENDING: "#757575",
}


DELIVERY_FIELDS = (
    "event", "channel", "kind", "notifier", "status", "attempts", "subject", "error_message",
    "backup", "schedule", "target", "created_at", "sent_at",
)  # fmt: skip


class NotifierForm(PluginOptionsForm):
    class Meta:
        model = Notifier
        fields = ["name", "kind", "options", "events", "is_default", "is_active"]

    def plugin_class(self, kind: str) -> Any:
        return notifier_class(kind)


@admin.register(Notifier)
class NotifierAdmin(ManagedByFile, admin.ModelAdmin):
    form = NotifierForm
    list_display = ["name", "kind", "event_list", "is_default", "is_active", "updated_at", "managed"]
    list_filter = ["kind", "is_default", "is_active"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description="Events")
    def event_list(self, obj: Notifier) -> str:
        return ", ".join(obj.events) if isinstance(obj.events, list) else "-"


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["when", "event", "channel", "status_label", "attempts", "subject", "backup_link"]
    list_filter = ["status", "event", "channel", "kind"]
    list_select_related = ["backup", "schedule"]
    search_fields = ["subject", "channel", "error_message"]
    date_hierarchy = "created_at"
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # deliveries are made by events, never typed in

    def has_change_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        return False  # the record of who was told what, and when

    @admin.display(description="When", ordering="created_at")
    def when(self, obj: Notification) -> str:
        return when(obj.created_at)

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj: Notification) -> str:
        return format_html(
            '<strong style="color:{}">{}</strong>',
            STATUS_COLOURS.get(obj.status, "inherit"),
            obj.get_status_display(),
        )

    @admin.display(description="Backup")
    def backup_link(self, obj: Notification) -> str:
        if obj.backup_id is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:backups_backup_change", args=[obj.backup_id]), obj.backup
        )
