"""Template filters for human units: ``{{ size|human_bytes }}``, ``{{ seconds|human_duration }}``,
``{{ moment|relative }}`` ("3 h ago", "in 42 min") and ``{{ moment|absolute }}`` (local time)."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

from backups.humanize import human_bytes as _human_bytes
from backups.humanize import human_duration as _human_duration
from backups.humanize import relative_time

register = template.Library()


@register.filter
def human_bytes(value: float | None) -> str:
    return _human_bytes(value)


@register.filter
def human_duration(value: float | None) -> str:
    return _human_duration(value)


@register.filter
def relative(value: datetime | None) -> str:
    return relative_time(value, timezone.now())


@register.filter
def absolute(value: datetime | None) -> str:
    if value is None:
        return ""
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S %Z}"


@register.filter
def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"
