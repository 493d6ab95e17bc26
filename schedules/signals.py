"""Keeping beat in step with changes made to targets (the core never imports this app, so the
schedules listen to the core's model): a target saved with another queue sends its schedules'
next firings to that queue."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save

from backups.models import Target

from . import services


def connect() -> None:
    post_save.connect(_on_target_saved, sender=Target, dispatch_uid="schedules.signals.target_saved")


def _on_target_saved(sender: type[Target], instance: Target, raw: bool = False, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if raw or (update_fields is not None and "queue" not in update_fields):
        return  # a fixture being loaded, or a save that left the queue alone
    services.route_schedules_of(instance)
