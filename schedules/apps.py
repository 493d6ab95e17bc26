from __future__ import annotations

from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "schedules"
    verbose_name = "Schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from backups.config import loader as config

        from . import checks, services  # noqa: F401  (checks registers itself)

        if services.sync_all_periodic_tasks not in config.AFTER_APPLY:
            config.AFTER_APPLY.append(services.sync_all_periodic_tasks)
