"""System checks of schedules: stored retention policies the engine cannot read."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, register
from django.db import DatabaseError

from backups.services import retention_errors


@register()
def check_schedule_retention(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .models import BackupSchedule

    try:
        owners = [("schedule", s.name, s.retention, s.timezone) for s in BackupSchedule.objects.all()]
    except DatabaseError:
        return []
    return retention_errors(owners)
