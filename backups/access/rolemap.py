"""``BACKUPSITE_ROLE_MAP``: the groups a login brings (LDAP group DNs, OIDC claim values, proxy
header values) -> roles, each everywhere or only on the targets of one tag.

The value is a JSON object; each key is a group, each value a role or a list of roles, a role
optionally scoped with ``@tag``::

    {"cn=backup-restorers,ou=groups,dc=example,dc=org": "Restorer",
     "cn=team-shop,ou=groups,dc=example,dc=org": ["Viewer", "Restorer@shop"]}

Roles are matched case-insensitively and returned in their canonical spelling. Groups are matched
case-insensitively with the whitespace after commas ignored, as LDAP compares DNs. Pure: standard
library and ``django.core.exceptions`` only, so the settings can parse it at start-up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

SETTING = "BACKUPSITE_ROLE_MAP"
ROLES = ("Viewer", "Operator", "Restorer", "Administrator")
_CANONICAL = {role.lower(): role for role in ROLES}
_COMMA_SPACE = re.compile(r"\s*,\s*")


@dataclass(frozen=True)
class Grant:
    """A role, on every target (``tag`` None) or on the targets carrying ``tag``."""

    role: str
    tag: str | None = None


@dataclass(frozen=True)
class RoleMap:
    """Normalised group -> the grants it gives (see :func:`normalise_group`)."""

    grants: dict[str, tuple[Grant, ...]]

    def grants_for(self, groups: Iterable[str]) -> list[Grant]:
        """The grants of ``groups``, each once, in the order the map lists them."""
        wanted = {normalise_group(group) for group in groups}
        found: list[Grant] = []
        for group, grants in self.grants.items():
            if group in wanted:
                found.extend(grant for grant in grants if grant not in found)
        return found


def normalise_group(group: str) -> str:
    """``group`` as compared: lower case, no whitespace around its commas or at its ends."""
    return _COMMA_SPACE.sub(",", group.strip()).lower()


def parse_role_map(text: str) -> RoleMap:
    """The map in ``text`` (empty: no grants); ImproperlyConfigured naming the bad key or value."""
    if not text.strip():
        return RoleMap({})
    try:
        pairs = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{SETTING}: not valid JSON ({exc})") from None
    if not isinstance(pairs, dict):
        raise ImproperlyConfigured(f'{SETTING}: expected a JSON object {{"group": "Role"}}, got {text!r}')
    grants: dict[str, tuple[Grant, ...]] = {}
    for group, value in pairs.items():
        key = normalise_group(group)
        if not key:
            raise ImproperlyConfigured(f"{SETTING}: a group name is empty")
        if key in grants:
            raise ImproperlyConfigured(f"{SETTING}: group {group!r} is listed twice")
        roles = [value] if isinstance(value, str) else value
        if not isinstance(roles, list) or not roles or not all(isinstance(role, str) for role in roles):
            raise ImproperlyConfigured(
                f"{SETTING}: group {group!r}: expected a role or a list of roles, got {value!r}"
            )
        grants[key] = tuple(dict.fromkeys(_parse_grant(group, role) for role in roles))
    return RoleMap(grants)


def _parse_grant(group: str, text: str) -> Grant:
    role, at, tag = (part.strip() for part in text.partition("@"))
    if role.lower() not in _CANONICAL:
        raise ImproperlyConfigured(
            f"{SETTING}: group {group!r}: unknown role {role!r} in {text!r}; use {', '.join(ROLES)}"
        )
    if at and not tag:
        raise ImproperlyConfigured(f"{SETTING}: group {group!r}: {text!r} names no tag after '@'")
    return Grant(_CANONICAL[role.lower()], tag or None)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads keeps the last of two equal keys without a word; one of them would be ignored.
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ImproperlyConfigured(f"{SETTING}: group {key!r} is listed twice")
        result[key] = value
    return result
