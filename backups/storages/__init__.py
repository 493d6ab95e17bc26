"""Backup storages: the registry of kinds and :func:`build_storage`.

A kind is one module with one :class:`BackupStorage` subclass, imported only when used (so the
web process does not load boto3, paramiko or the cloud SDKs until a storage of that kind is
built). The contract is in :mod:`backups.storages.base`.
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string

from .base import (
    PARTIAL_MARKER,
    STALE_AFTER,
    BackupStorage,
    ObjectWriter,
    Option,
    StorageError,
    StoredObject,
)
from .local import LocalStorage

STORAGE_KINDS = ("local", "s3", "sftp", "ftp", "gcs", "azure")
_CLASSES: dict[str, str] = {
    "local": "backups.storages.local.LocalStorage",
    "s3": "backups.storages.s3.S3Storage",
    "sftp": "backups.storages.sftp.SFTPStorage",
    "ftp": "backups.storages.ftp.FTPStorage",
    "gcs": "backups.storages.gcs.GCSStorage",
    "azure": "backups.storages.azure.AzureStorage",
}
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
]


def storage_class(kind: str) -> type[BackupStorage]:
    if kind not in STORAGE_KINDS:
        raise StorageError(f"unknown storage kind {kind!r}; use one of {', '.join(STORAGE_KINDS)}")
    cls: type[BackupStorage] = import_string(_CLASSES[kind])
    return cls


def build_storage(name: str, kind: str, options: dict[str, Any], prefix: str = "") -> BackupStorage:
    """Build a storage from plain values (options with secrets already resolved)."""
    try:
        cls = storage_class(kind)
    except StorageError as exc:
        raise StorageError(f"{name}: {exc}") from None
    return cls(name, options, prefix)
