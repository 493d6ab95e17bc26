"""Login modes: ``BACKUPSITE_AUTH`` (e.g. ``ldap,local``) -> ``AUTHENTICATION_BACKENDS``.

Runs while the settings load: standard library and ``django.core.exceptions`` only. Django tries
the backends in the listed order, so ``ldap,local`` asks the directory first and then the local
accounts (a break-glass administrator that keeps working when the directory does not).

Adding a mode is one line in :data:`BACKENDS` (and its settings reader, called from
``backupsite/settings.py`` the way ``ldap`` is), then removing it from :data:`PLANNED`.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ImproperlyConfigured

SETTING = "BACKUPSITE_AUTH"

# mode -> the authentication backends (dotted paths) it puts in AUTHENTICATION_BACKENDS, in order.
BACKENDS: dict[str, tuple[str, ...]] = {
    "local": ("django.contrib.auth.backends.ModelBackend",),
    "ldap": ("backups.access.ldap.LDAPBackend",),
    "oidc": ("backups.access.oidc.backend.OIDCBackend",),
    "proxy": ("backups.access.proxy.ProxyBackend",),  # with its middleware (settings)
    "none": ("django.contrib.auth.backends.BaseBackend",),  # signs nobody in: everyone is the guest
}
# Documented modes that are not built yet: named apart from typos so the message says so.
PLANNED: tuple[str, ...] = ()


def parse_modes(text: str) -> list[str]:
    """The modes of a ``BACKUPSITE_AUTH`` value, in the listed order; ImproperlyConfigured for an
    empty list, an unknown or not yet built mode, or a mode listed twice."""
    modes = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not modes:
        raise ImproperlyConfigured(f"{SETTING}: name at least one login mode; use {_known()}")
    seen: set[str] = set()
    for mode in modes:
        if mode in PLANNED:
            raise ImproperlyConfigured(f"{SETTING}: mode {mode!r} is not built yet; use {_known()}")
        if mode not in BACKENDS:
            raise ImproperlyConfigured(f"{SETTING}: unknown mode {mode!r}; use {_known()}")
        if mode in seen:
            raise ImproperlyConfigured(f"{SETTING}: mode {mode!r} is listed twice")
        seen.add(mode)
    if "none" in seen and len(modes) > 1:
        raise ImproperlyConfigured(f"{SETTING}: mode 'none' (no login) cannot be combined with others")
    return modes


def backends_for(modes: Iterable[str]) -> list[str]:
    """The ``AUTHENTICATION_BACKENDS`` for ``modes`` (from :func:`parse_modes`), in their order."""
    backends: list[str] = []
    for mode in modes:
        try:
            backends.extend(BACKENDS[mode])
        except KeyError:
            raise ImproperlyConfigured(f"{SETTING}: unknown mode {mode!r}; use {_known()}") from None
    return backends


def _known() -> str:
    return ", ".join(BACKENDS)
