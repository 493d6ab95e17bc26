"""Backup storages: the registry of kinds and :func:`build_storage`.

A kind is one module with one :class:`BackupStorage` subclass, imported only when used (so the
web process does not load boto3, paramiko or the cloud SDKs until a storage of that kind is
built). The contract is in :mod:`backups.storages.base`.
"""

from __future__ import annotations

from typing import Any

from backups.plugins import Option, Registry

from .base import (
    PARTIAL_MARKER,
    STALE_AFTER,
    BackupStorage,
    ObjectWriter,
    StorageError,
    StoredObject,
)
from .local import LocalStorage

REGISTRY: Registry[BackupStorage] = Registry(
    "storage kind",
    {
        "local": "backups.storages.local.LocalStorage",
        "s3": "backups.storages.s3.S3Storage",
        "sftp": "backups.storages.sftp.SFTPStorage",
        "ftp": "backups.storages.ftp.FTPStorage",
        "gcs": "backups.storages.gcs.GCSStorage",
        "azure": "backups.storages.azure.AzureStorage",
    },
    # The labels of Storage.kind's choices (in its migrations): short kinds upper-cased.
    labels={"local": "Local", "s3": "S3", "sftp": "Sftp", "ftp": "FTP", "gcs": "GCS", "azure": "Azure"},
    error=StorageError,
)
STORAGE_KINDS = tuple(REGISTRY.keys())
AVAILABLE_KINDS = STORAGE_KINDS

__all__ = [
    "AVAILABLE_KINDS",
    "PARTIAL_MARKER",
    "STALE_AFTER",
    "STORAGE_KINDS",
    "BackupStorage",
    "LocalStorage",
    "ObjectWriter",
    "Option",
    "StorageError",
    "StoredObject",
    "build_storage",
    "storage_class",
    "storage_kind_choices",
]


def storage_class(kind: str) -> type[BackupStorage]:
    return REGISTRY.load(kind)


def storage_kind_choices() -> list[tuple[str, str]]:
    return REGISTRY.choices()


def build_storage(name: str, kind: str, options: dict[str, Any], prefix: str = "") -> BackupStorage:
    """Build a storage from plain values (options with secrets already resolved)."""
    try:
        cls = storage_class(kind)
    except StorageError as exc:
        raise StorageError(f"{name}: {exc}") from None
    return cls(name, options, prefix)
