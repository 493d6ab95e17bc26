"""Pieces every admin page shares: status badges and the option checks of plugin forms."""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html

from backups import secrets
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


def option_problems(cls: Any, options: dict[str, Any]) -> list[tuple[str, str]]:
    """A storage or notifier kind's own option rules, plus: secrets only as references."""
    problems: list[tuple[str, str]] = cls.validate_options(options)
    for key, spec in cls.OPTIONS.items():
        value = options.get(key)
        if spec.secret and isinstance(value, str) and not secrets.is_reference_only(value):
            problems.append((key, "write secrets as ${ENV_VAR} or ${file:/path}; plaintext is refused"))
    return problems
