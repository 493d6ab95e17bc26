"""The backups app's admin: every module registers its own models when imported here."""

from backups.admin import access, advanced, audit, backups, drills, keys, notifications, targets  # noqa: F401  (each registers its ModelAdmins)
