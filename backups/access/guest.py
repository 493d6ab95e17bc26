"""The ``none`` login mode: nobody logs in; every visitor is the guest, a read-only Viewer.

:class:`GuestMiddleware` (after ``AuthenticationMiddleware``, only in this mode) makes every
request's user a :class:`Guest`: not a database user (``is_authenticated`` is False, so nothing is
granted, owned or recorded in its name), active and staff so the admin lets it in, holding
exactly the Viewer role's permissions (``role_permissions()[Role.VIEWER]``). So ``can()`` allows
``view`` and refuses every other action, and the admin shows rows without add, change or delete.
Read only twice over: the middleware also refuses every request that is not a GET, HEAD or
OPTIONS (403), whatever a view would allow. Every admin page carries a banner saying so
(``templates/admin/base_site.html``), and a system check warns (``backups.W002``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib.auth.models import AnonymousUser, Permission
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from backups.access.roles import role_permissions
from backups.models import Role

READ_METHODS = ("GET", "HEAD", "OPTIONS")
BANNER = (
    "Backupsite runs without login (BACKUPSITE_AUTH=none): everyone can see every target; "
    "nothing can be changed"
)


class Guest(AnonymousUser):
    """Everyone, when nobody logs in: the Viewer role's permissions, nothing else."""

    # Active staff: the admin lets it in. (django-stubs types AnonymousUser's as literals.)
    username = "guest"  # type: ignore[assignment]
    is_active = True  # type: ignore[assignment]
    is_staff = True  # type: ignore[assignment]
    is_guest = True  # the admin's banner

    def __init__(self) -> None:
        self._permissions: frozenset[str] | None = None

    def __str__(self) -> str:
        return self.username

    def get_short_name(self) -> str:
        return self.username

    def get_all_permissions(self, obj: Any = None) -> set[str]:
        """The Viewer role's permissions (``app_label.codename``), read once per request."""
        if obj is not None:
            return set()
        if self._permissions is None:
            rows = Permission.objects.filter(role_permissions()[Role.VIEWER])
            self._permissions = frozenset(
                f"{app_label}.{codename}"
                for app_label, codename in rows.values_list("content_type__app_label", "codename")
            )
        return set(self._permissions)

    def get_group_permissions(self, obj: Any = None) -> set[str]:
        return self.get_all_permissions(obj)

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return perm in self.get_all_permissions(obj)

    def has_perms(self, perm_list: Iterable[str], obj: Any = None) -> bool:
        return all(self.has_perm(perm, obj) for perm in perm_list)

    def has_module_perms(self, app_label: str) -> bool:
        return any(perm.startswith(f"{app_label}.") for perm in self.get_all_permissions())


class GuestMiddleware:
    """Every request's user is the :class:`Guest`; anything but reading is refused."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.user = Guest()
        if request.method not in READ_METHODS:
            raise PermissionDenied(f"{BANNER}.")
        return self.get_response(request)
