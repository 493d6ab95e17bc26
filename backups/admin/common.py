"""Pieces every admin page shares: status badges."""

from __future__ import annotations

from django.utils.html import format_html

from backups.models import BackupStatus

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
