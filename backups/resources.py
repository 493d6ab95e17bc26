"""What every service needs right before use: targets and storages resolved (secrets included),
the scratch directory, a backup's stored copies and the facts to restore it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings

from . import secrets
from .engines import Connection, Engine, get_engine
from .engines.configuration import ConfigurationEngine
from .models import Backup, BackupCopy, CopyStatus, Storage, Target
from .storages import BackupStorage, build_storage

logger = logging.getLogger(__name__)


MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1


class ServiceError(Exception):
    """A request that cannot be carried out as asked (bad id, wrong state); nothing was changed."""


# -- resolving targets and storages right before use ---------------------------------------------


def connection_for(target: Target) -> Connection:
    """The target's connection with its secret references resolved (raises SecretError)."""
    return Connection(
        name=target.name,
        engine=target.engine,
        host=target.host,
        port=target.port,
        database=target.database,
        user=target.user,
        password=secrets.resolve(target.password, field="password"),
        options=secrets.resolve_values(target.options),
        include_tables=tuple(target.include_tables),
        exclude_tables=tuple(target.exclude_tables),
        paths=tuple(target.paths),
    )


def engine_for(target: Target, backup_type: str) -> Engine:
    """The engine that makes (and reads back) ``target``'s backups of ``backup_type``: the
    target's own, except for configuration backups, which every engine shares."""
    if backup_type == "configuration":
        return ConfigurationEngine()
    return get_engine(target.engine)


def storage_for(storage: Storage) -> BackupStorage:
    return build_storage(storage.name, storage.kind, secrets.resolve_values(storage.options), storage.prefix)


def scratch_dir() -> Path:
    path = Path(settings.BACKUPSITE_TMP)
    path.mkdir(parents=True, exist_ok=True)
    return path


def stored_copies(backup: Backup) -> list[BackupCopy]:
    return list(backup.copies.filter(status=CopyStatus.STORED).select_related("storage").order_by("id"))


def restore_manifest(backup: Backup) -> dict[str, Any]:
    """The facts an engine needs to restore, rebuilt from the catalog row."""
    return {
        "engine_info": {
            "tables": backup.tables_included,
            **backup.engine_info,
            "roots": {Path(path).name: path for path in backup.files_included},
        },
        "tables": backup.tables_included,
        "raw_size": backup.raw_size,  # the decoded archive's size: what a spool of it needs
    }
