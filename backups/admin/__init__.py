"""The backups app's admin: every module registers its own models when imported here."""

from backups.admin import (  # noqa: F401  (each registers its ModelAdmins)
    access,
    advanced,
    api_tokens,
    audit,
    backups,
    drills,
    keys,
    notifications,
    targets,
)
