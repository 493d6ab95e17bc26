from __future__ import annotations

from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "schedules"
    verbose_name = "Schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from backups import services as backup_services

        from . import checks, config, cron, models, requests, services, signals  # noqa: F401  (checks registers itself)

        signals.connect()  # a target's new queue reaches its schedules' periodic tasks
        backup_services.register_schedule_lookup(requests.info_by_id)
        backup_services.register_schedule_overview(requests.overviews)
        backup_services.register_schedule_states(requests.states)
        backup_services.register_key_users(requests.key_users)
        backup_services.register_cron_check(cron.cron_problem)  # targets' drill, checked as schedules' cron
        backup_services.register_cron_clock(cron.previous_slot)  # external targets' expect
        backup_services.register_section(
            backup_services.ConfigSection(
                name="schedules",
                position=30,
                validate=config.validate_schedule,
                apply=config.apply_schedule,
                after_apply=services.sync_all_periodic_tasks,
                model=models.BackupSchedule,
                declared=config.declared_schedule,
                label="schedule",
            )
        )
