"""System checks: missing dump tools for the engines in use, storages that cannot be built."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register
from django.db import DatabaseError

from .engines import EngineError, get_engine


@register()
def check_engine_binaries(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .models import Target

    try:
        in_use = set(Target.objects.filter(is_active=True).values_list("engine", flat=True))
    except DatabaseError:  # not migrated yet: nothing is in use
        return []
    errors: list[CheckMessage] = []
    for key in sorted(in_use):
        try:
            engine = get_engine(key)
        except EngineError as exc:
            errors.append(Error(str(exc), id="backups.E002"))
            continue
        for binary in engine.missing_binaries():
            errors.append(
                Error(
                    f"engine {key!r} needs the program {binary!r}, which is not on PATH",
                    hint=f"Install {binary} (see README, 'Requirements').",
                    id="backups.E001",
                )
            )
    return errors


@register()
def check_storages(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every storage row must build: a known kind, valid options, resolvable secrets. Nothing
    connects here (``backup_config check --probe`` does)."""
    from . import secrets
    from .models import Storage
    from .storages import StorageError, build_storage

    try:
        rows = list(Storage.objects.all())
    except DatabaseError:
        return []
    errors: list[CheckMessage] = []
    for row in rows:
        try:
            build_storage(row.name, row.kind, secrets.resolve_values(row.options), row.prefix)
        except secrets.SecretError as exc:
            # A warning: the web host may rightly lack secrets that only the workers hold.
            errors.append(
                Warning(
                    f"storage {row.name!r} cannot be built here: {exc}",
                    hint="Set the environment variable or create the file the reference names.",
                    id="backups.W001",
                )
            )
        except (StorageError, ImportError) as exc:
            errors.append(
                Error(
                    f"storage {row.name!r} cannot be built: {exc}",
                    hint="Fix the storage's options in the admin or the TOML file and apply it again.",
                    id="backups.E003",
                )
            )
    return errors


@register()
def check_login_mode(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """BACKUPSITE_AUTH=none opens every target's history to whoever reaches the site: say so at
    every start (migrate, runserver, check) as well as on every page."""
    from django.conf import settings

    if "none" not in settings.BACKUPSITE_AUTH:
        return []
    return [
        Warning(
            "Backupsite runs without login (BACKUPSITE_AUTH=none): everyone who reaches it can see "
            "every target and its backups, read only",
            hint="Keep it on a trusted network, or set BACKUPSITE_AUTH to local, ldap, oidc or proxy.",
            id="backups.W002",
        )
    ]


@register()
def check_retention(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A stored policy the engine cannot read would make cleanup delete nothing for that target
    (safe, but it must be seen): rows edited outside the admin and the TOML loader land here."""
    from .models import Target

    try:
        owners = [("target", t.name, t.retention, t.timezone) for t in Target.objects.all()]
    except DatabaseError:
        return []
    return retention_errors(owners)


def retention_errors(owners: list[tuple[str, str, Any, str]]) -> list[CheckMessage]:
    """backups.E004 for each (kind, name, policy, timezone) whose policy the engine refuses."""
    from backups.retention.policy import Policy, PolicyError

    errors: list[CheckMessage] = []
    for kind, name, policy, tz in owners:
        try:
            Policy.from_mapping(policy, timezone=tz)
        except PolicyError as exc:
            errors.append(
                Error(
                    f"{kind} {name!r} has an invalid retention policy: {exc}",
                    hint="Fix it in the admin or the TOML file; until then cleanup deletes nothing of its backups.",
                    id="backups.E004",
                )
            )
    return errors
