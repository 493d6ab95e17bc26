"""Roles from a directory, re-evaluated at every login through it: the groups a login brings go
through ``BACKUPSITE_ROLE_MAP`` to grants, which replace the user's roles of that source.

The admin's login form checks ``is_staff`` between authenticating and logging in, so the door is
opened (or closed) on the user object as the directory fills it in; a known user's roles are
replaced there and then (a login refused for want of a role still takes the old roles away), a
first login's, which need a saved user, at ``user_logged_in``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in

from backups.access.roles import apply_grants

PENDING = "_backupsite_directory_grants"  # (source, grants) carried from authenticate to login


def remember_groups(user: Any, groups: Iterable[str], source: str) -> None:
    """The groups of a login through ``source`` just checked: open the admin's door exactly
    when they give some role, and keep the grants for :func:`apply_pending`."""
    grants = settings.BACKUPSITE_ROLE_MAP.grants_for(groups)
    user.is_staff = bool(grants) or user.is_superuser
    if user.pk is not None:
        apply_grants(user, grants, source)  # a known user: even a refused login takes roles away
    else:
        setattr(user, PENDING, (source, grants))  # a first login: the user is saved after this


def apply_pending(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    pending = getattr(user, PENDING, None)
    if pending is not None:
        source, grants = pending
        apply_grants(user, grants, source)


def connect() -> None:
    """Listen to the directories of the configured login modes (from ``BackupsConfig.ready``)."""
    user_logged_in.connect(apply_pending, dispatch_uid="backups.directory.apply_pending")
    if "ldap" in settings.BACKUPSITE_AUTH:
        from backups.access import ldap

        ldap.connect_signals(lambda user, groups: remember_groups(user, groups, "ldap"))
