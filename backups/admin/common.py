"""Pieces every admin page shares: status badges, sizes, durations and times as people read
them (the exact value on hover), the form of a plugin's options, and rows a configuration file
defines (read-only here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from backups.humanize import human_bytes, human_duration, relative_time
from backups.models import BackupStatus
from backups.services import NotifierError, StorageError, option_problems

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


def when(moment: datetime | None, now: datetime | None = None) -> str:
    """``3 h ago``, with the absolute local time on hover; "-" for None."""
    if moment is None:
        return "-"
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        f"{local:%Y-%m-%d %H:%M:%S %Z}",
        relative_time(moment, now or timezone.now()),
    )


def size(count: int | None) -> str:
    """``14.5 MiB``, with the exact number of bytes on hover; "-" for None."""
    if count is None:
        return "-"
    return format_html('<span title="{} bytes">{}</span>', f"{count:,}", human_bytes(count))


def duration(seconds: float | None) -> str:
    """``1 min 12 s``, with the seconds on hover; "-" for None."""
    if seconds is None:
        return "-"
    return format_html('<span title="{} s">{}</span>', f"{seconds:.3f}", human_duration(seconds))


def post_button(url: str, label: str, next_url: str) -> str:
    """A button of a changelist row that POSTs to ``url``: rows sit inside the changelist's own
    form (which carries the CSRF token) and forms cannot nest, so the button re-targets that
    form with ``formaction``; ``next`` brings the user back to the same page."""
    return format_html(
        '<button type="submit" class="button operation" formaction="{}" formmethod="post" '
        'name="next" value="{}">{}</button>',
        url,
        next_url,
        label,
    )


class PluginOptionsForm(forms.ModelForm):
    """The form of a row whose ``options`` belong to its plugin ``kind`` (a storage, a notifier):
    the kind's own option rules, secrets only as references. Nothing is saved otherwise."""

    def plugin_class(self, kind: str) -> Any:
        raise NotImplementedError

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind, options = cleaned.get("kind"), cleaned.get("options")
        if options is not None and not isinstance(options, dict):
            self.add_error("options", "must be a JSON object of option names to values")
            return cleaned
        if not kind or options is None:
            return cleaned
        try:
            cls = self.plugin_class(kind)
        except (StorageError, NotifierError, ImportError) as exc:
            self.add_error("kind", str(exc))
            return cleaned
        for key, message in option_problems(cls, options):
            self.add_error("options", f"{key}: {message}")
        return cleaned


def managed_banner(path: str) -> str:
    return f"Defined by {path}: change it there and run backup_config apply."


class ManagedByFile:
    """Mixed into a ModelAdmin before ``admin.ModelAdmin``, for models with ``managed_by``: a row
    a configuration file defines cannot be changed or deleted here (its page renders view-only,
    with a banner naming the file), since the next apply would undo the change. Operations (Run
    now, Verify, retiring a key) are not changes of the row and keep working; rows managed in the
    admin behave as before. ``managed`` is a changelist column."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.managed_by:
            return False
        return bool(super().has_change_permission(request, obj))  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.managed_by:
            return False
        return bool(super().has_delete_permission(request, obj))  # type: ignore[misc]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None and obj.managed_by:
            messages.warning(request, managed_banner(obj.managed_by))
        response: HttpResponse = super().render_change_form(  # type: ignore[misc]
            request, context, add, change, form_url, obj
        )
        return response

    @admin.display(description="Managed by file", boolean=True)
    def managed(self, obj: Any) -> bool:
        return bool(obj.managed_by)
