"""Roles and the one permission check, ``can(user, action, target)``.

Four roles, each including the one before: **Viewer** (dashboard, history, steps, logs),
**Operator** (+ run now, verify), **Restorer** (+ restore, restore preview, download, approve
another person's restore), **Administrator** (+ targets, storages, schedules, notifiers, users
and roles, the audit log). A role held everywhere is a Django group of that name with its
permissions (:func:`sync_role_groups` keeps them in step after every ``migrate``); a role held
on the targets of one tag is a :class:`~backups.models.RoleGrant`.

Every view, admin action, command and task asks :func:`can`: it is the hook for other
authorisation schemes (replace it and everything follows). A permission given to a user or a
group directly counts as the role's: ``can`` first asks Django's ``has_perm`` for the action's
permission, then the user's tag-scoped grants on ``target``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q
from django.utils.module_loading import import_string

from backups.models import GrantSource, Role, RoleGrant, Target

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser, AnonymousUser

    AnyUser = AbstractUser | AnonymousUser

RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.RESTORER: 3, Role.ADMINISTRATOR: 4}

# action -> (the least role that may do it, the Django permission that grants it everywhere)
ACTIONS: dict[str, tuple[Role, str]] = {
    "view": (Role.VIEWER, "backups.view_backup"),
    "run": (Role.OPERATOR, "backups.run_backup"),
    "verify": (Role.OPERATOR, "backups.verify_backup"),
    "preview": (Role.RESTORER, "restores.restore_backup"),
    "restore": (Role.RESTORER, "restores.restore_backup"),
    "approve": (Role.RESTORER, "restores.approve_restore"),
    "download": (Role.RESTORER, "backups.download_backup"),
    "configure": (Role.ADMINISTRATOR, "backups.change_target"),
    "audit": (Role.ADMINISTRATOR, "backups.view_auditevent"),
}

CATALOG_SENSITIVE = ("download", "restore", "preview")  # Administrators only on the app's own catalog
ROLE_APPS = ("backups", "schedules", "restores")  # the product's models
ADMIN_APPS = (*ROLE_APPS, "auth", "django_celery_beat")
APPEND_ONLY = ("auditevent",)  # nobody adds, changes or deletes these through the admin


class Grantable(Protocol):
    """A grant from a directory (``backups.access.rolemap.Grant``): a role, everywhere or on a tag."""

    @property
    def role(self) -> str: ...

    @property
    def tag(self) -> str | None: ...


def can(user: AnyUser, action: str, target: Target | None = None) -> bool:
    """Whether ``user`` may do ``action`` (a key of :data:`ACTIONS`) on ``target`` (None: on
    everything, or on nothing in particular, as adding a target)."""
    needed, permission = ACTIONS[action]
    if not user.is_active:
        return False
    extra = _extra_check()
    if extra is not None and not extra(user, action, target):
        return False  # another scheme's veto (BACKUPSITE_PERMISSION_CHECK); it never widens
    if (
        action in CATALOG_SENSITIVE
        and target is not None
        and is_own_catalog(target)
        and action != "configure"
    ):
        # A backup of the catalog holds every user's password hash and the audit trail.
        return can(user, "configure", target) and can(user, action)
    if user.has_perm(permission):  # superusers, role groups, permissions given directly
        return True
    if target is None or not user.is_authenticated:
        return False
    tags = set(target.tags or ())
    return any(RANK[Role(role)] >= RANK[needed] and tag in tags for role, tag in _scoped(user))


def _extra_check() -> Callable[[Any, str, Target | None], bool] | None:
    """The function named by ``BACKUPSITE_PERMISSION_CHECK`` (a dotted path), asked first by
    :func:`can` with the same arguments: the hook for a more complex authorisation scheme (a
    ticket system, change windows). It can only refuse: roles still decide what is allowed."""
    path = getattr(settings, "BACKUPSITE_PERMISSION_CHECK", "")
    return _imported(path) if path else None


@functools.lru_cache(maxsize=4)
def _imported(path: str) -> Callable[[Any, str, Target | None], bool]:
    check: Callable[[Any, str, Target | None], bool] = import_string(path)
    return check


def is_own_catalog(target: Target) -> bool:
    """Whether ``target`` is the database Backupsite itself runs on."""
    catalog = settings.DATABASES["default"]
    engine = str(catalog.get("ENGINE", ""))
    if target.engine == "sqlite" and engine.endswith("sqlite3"):
        name = str(catalog.get("NAME") or "")
        return bool(name and target.database) and Path(target.database).resolve() == Path(name).resolve()
    if (target.engine, "postgresql" in engine, "mysql" in engine) in {
        ("postgresql", True, False),
        ("mysql", False, True),
    }:
        host = str(catalog.get("HOST") or "localhost")
        same_host = target.host in {host, *(LOOPBACK if host in LOOPBACK else ())}
        port = int(str(catalog.get("PORT") or (5432 if target.engine == "postgresql" else 3306)))
        return same_host and (target.port or port) == port and target.database == catalog.get("NAME")
    return False


LOOPBACK = ("localhost", "127.0.0.1", "::1", "")


def visible_target_ids(user: AnyUser) -> set[int] | None:
    """The targets ``user`` may see: None for all, else the ids of the targets tagged by one of
    the user's scoped grants (an empty set: none)."""
    if can(user, "view"):
        return None
    if not user.is_active or not user.is_authenticated:
        return set()
    tags = {tag for _, tag in _scoped(user)}
    if not tags:
        return set()
    return {
        pk for pk, target_tags in Target.objects.values_list("pk", "tags") if tags & set(target_tags or ())
    }


def initiator_may(initiated_by: str, action: str, target: Target) -> bool:
    """Whether whoever queued work may still do it when a worker picks it up: ``web:<username>``
    is asked again (a role withdrawn while the task waited counts); the command line and the
    scheduler act with the server's own rights."""
    channel, _, name = initiated_by.partition(":")
    if channel != "web":
        return True
    user = get_user_model().objects.filter(username=name).first()
    return user is not None and can(user, action, target)


def can_somewhere(user: AnyUser, action: str) -> bool:
    """Whether ``user`` may do ``action`` on every target or on the targets of some tag (the
    admin offers the action's column or button, and asks :func:`can` per row)."""
    if can(user, action):
        return True
    if not user.is_active or not user.is_authenticated:
        return False
    needed = ACTIONS[action][0]
    return any(RANK[Role(role)] >= RANK[needed] for role, _ in _scoped(user))


def has_any_role(user: AnyUser) -> bool:
    """Whether ``user`` holds any role, everywhere or on some tag (the admin lets them in)."""
    if not user.is_active or not user.is_authenticated:
        return False
    return can(user, "view") or bool(_scoped(user))


def _scoped(user: Any) -> list[tuple[str, str]]:
    """The user's (role, tag) grants, read once per user object (once per request)."""
    cached = getattr(user, "_backupsite_scoped", None)
    if cached is None:
        cached = list(RoleGrant.objects.filter(user=user).values_list("role", "tag"))
        user._backupsite_scoped = cached
    return cached


@transaction.atomic
def apply_grants(user: Any, grants: Iterable[Grantable], source: str) -> bool:
    """Make ``user``'s roles those ``grants`` from a login through ``source`` (``ldap``,
    ``oidc``, ``proxy``) give: the role groups, and the scoped grants of that source. A directory
    user holds the admin's door (``is_staff``) exactly while some role is held. Returns whether
    anything changed."""
    source = GrantSource(source)
    everywhere = {Role(grant.role) for grant in grants if grant.tag is None}
    scoped = {(Role(grant.role), grant.tag) for grant in grants if grant.tag is not None}
    changed = False
    held = {group.name: group for group in user.groups.filter(name__in=Role.values)}
    gone = [group for name, group in held.items() if name not in everywhere]
    new = [role for role in everywhere if role not in held]
    if gone:
        user.groups.remove(*gone)
    if new:
        user.groups.add(*Group.objects.filter(name__in=new))
    changed |= bool(gone or new)
    existing = {
        (grant.role, grant.tag): grant for grant in RoleGrant.objects.filter(user=user, source=source)
    }
    stale = [grant.pk for key, grant in existing.items() if key not in scoped]
    if stale:
        RoleGrant.objects.filter(pk__in=stale).delete()
    added = [
        RoleGrant(user=user, role=role, tag=tag, source=source)
        for role, tag in scoped
        if (role, tag) not in existing
    ]
    RoleGrant.objects.bulk_create(added)
    changed |= bool(stale or added)
    staff = bool(everywhere or scoped) or user.is_superuser
    if user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])
        changed = True
    for cache in ("_backupsite_scoped", "_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(cache, None)
    return changed


def role_permissions() -> dict[Role, Q]:
    """Each role's permissions, as a filter on ``Permission`` (each role includes the one before)."""
    view = Q(content_type__app_label__in=ROLE_APPS, codename__startswith="view_") & ~Q(
        codename__in=[f"view_{model}" for model in APPEND_ONLY]
    )
    operate = view | Q(content_type__app_label="backups", codename__in=["run_backup", "verify_backup"])
    restore = (
        operate
        | Q(content_type__app_label="backups", codename="download_backup")
        | Q(content_type__app_label="restores", codename__in=["restore_backup", "approve_restore"])
    )
    administer = Q(content_type__app_label__in=ADMIN_APPS) & ~Q(
        content_type__model__in=APPEND_ONLY, codename__regex=r"^(add|change|delete)_"
    )
    return {Role.VIEWER: view, Role.OPERATOR: operate, Role.RESTORER: restore, Role.ADMINISTRATOR: administer}


def sync_role_groups(**signal: Any) -> None:
    """Create the four role groups and set their permissions (idempotent; a ``post_migrate``
    receiver, so permissions of models added later join their roles)."""
    for role, permissions in role_permissions().items():
        group, _created = Group.objects.get_or_create(name=role.value)
        group.permissions.set(Permission.objects.filter(permissions))
