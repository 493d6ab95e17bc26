"""Pieces every admin page shares: status badges and the form of a plugin's options."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.html import format_html

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
