from __future__ import annotations

from django.apps import AppConfig


class RestoresConfig(AppConfig):
    name = "restores"
    verbose_name = "Restores"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from backups import services as backup_services

        from . import announcing, approvals, services

        # The dashboard (in backups, which never imports restores) shows restores under way.
        backup_services.register_running_work(services.running_restores)
        backup_services.register_awaiting_decisions(approvals.awaiting_decisions)
        # The watch (every minute) ends restores whose worker died, as it does backup runs.
        backup_services.register_reaper(services.reap_lost_restores)
        # ... and marks restore requests past their expiry EXPIRED (pages only read them).
        backup_services.register_reaper(approvals.expire_requests)
        # ... and announces ended restores whose process stopped before saying so.
        backup_services.register_reaper(announcing.announce_unannounced)
