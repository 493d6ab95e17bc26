from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BackupsConfig(AppConfig):
    name = "backups"
    verbose_name = "Backups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .access import directory, sessions, throttle
        from .access.roles import sync_role_groups
        from .audit.receivers import connect_receivers
        from .config import applied  # noqa: F401  (registers the configuration drift check)

        connect_receivers()  # logins, admin changes, users and roles -> the audit log
        directory.connect()  # roles from LDAP groups, re-evaluated at each login
        throttle.connect()  # login lockouts (django-axes) -> the audit log
        sessions.connect()  # a login starts the idle timeout's clock
        # The role groups follow every migrate (and the test database's creation): after each
        # app's post_migrate, as each app's permissions are created in its own.
        post_migrate.connect(sync_role_groups, dispatch_uid="backups.sync_role_groups")
