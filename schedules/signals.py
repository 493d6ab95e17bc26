"""Keeping beat in step with changes made to targets (the core never imports this app, so the
schedules listen to the core's model): a target saved with another queue sends its schedules'
next firings to that queue; a target saved or deleted gets its drill's periodic task created,
updated or removed."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from backups.models import Target

from . import drills, services

#: The fields of a target its drill's periodic task is made of.
DRILL_FIELDS = {"drill", "is_active", "queue", "timezone", "name"}


def connect() -> None:
    post_save.connect(_on_target_saved, sender=Target, dispatch_uid="schedules.signals.target_saved")
    post_delete.connect(_on_target_deleted, sender=Target, dispatch_uid="schedules.signals.target_deleted")


def _on_target_saved(sender: type[Target], instance: Target, raw: bool = False, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if raw:
        return  # a fixture being loaded
    if update_fields is None or DRILL_FIELDS & set(update_fields):
        drills.sync_drill_task(instance)
    if update_fields is None or "queue" in update_fields:
        services.route_schedules_of(instance)


def _on_target_deleted(sender: type[Target], instance: Target, **kwargs: Any) -> None:
    drills.remove_drill_task(instance.pk)
