"""Downloading a stored backup: a signed URL where the storage can sign one, else a stream.

Takes a backup id (never a path), picks a stored copy, and logs every download as a
:class:`BackupDownload` row before a byte leaves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from django.conf import settings

from .audit import record
from .models import Backup, BackupDownload, BackupStatus, DownloadMethod
from .resources import ServiceError, storage_for, stored_copies
from .storages import BackupStorage

logger = logging.getLogger(__name__)


class NoSuchBackup(ServiceError):
    """No downloadable backup has that id."""


class _ClosingReader:
    """The object's stream; closing it (the response does, when sent or abandoned) also closes
    the storage's connection (an SFTP or FTP session would otherwise outlive the download)."""

    def __init__(self, stream: BinaryIO, storage: BackupStorage) -> None:
        self.stream, self.storage = stream, storage

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.storage.close()


@dataclass
class Download:
    filename: str
    size: int | None
    url: str = ""  # a signed URL to redirect to, or
    stream: BinaryIO | None = None  # the bytes to stream


def start_download(
    backup_id: int, user: Any, storage_name: str = "", remote_addr: str | None = None
) -> Download:
    """Open a download of ``backup_id`` (from the named storage, else the first stored copy)."""
    backup = Backup.objects.filter(pk=backup_id).select_related("target").first()
    if backup is None:
        raise NoSuchBackup(f"there is no backup {backup_id}")
    if backup.deleted_at is not None or backup.status != BackupStatus.SUCCESS:
        raise NoSuchBackup(f"backup {backup_id} is {'deleted' if backup.deleted_at else backup.status}")
    copies = stored_copies(backup)
    if storage_name:
        copies = [copy for copy in copies if copy.storage.name == storage_name]
    if not copies:
        raise NoSuchBackup(
            f"backup {backup_id} has no stored copy" + (f" in {storage_name}" if storage_name else "")
        )
    copy = copies[0]
    storage = storage_for(copy.storage)
    download = Download(filename=PurePosixPath(copy.path).name, size=backup.file_size)
    if storage.can_sign_urls:
        with storage:
            download.url = storage.signed_url(copy.path, min(settings.BACKUPSITE_DOWNLOAD_URL_SECONDS, 300))
        method = DownloadMethod.SIGNED_URL
    else:
        download.stream = _ClosingReader(storage.open_reader(copy.path), storage)  # type: ignore[assignment]
        method = DownloadMethod.STREAM
    BackupDownload.objects.create(
        backup=backup,
        storage=copy.storage,
        user=user if getattr(user, "pk", None) else None,
        username=getattr(user, "get_username", lambda: "")(),
        method=method,
        remote_addr=remote_addr,
    )
    record(
        "download.signed_url" if download.url else "backup.download",
        user=user,
        obj=backup,
        details={"storage": copy.storage.name, "method": method},
    )  # the client's address and login method come from the request being served
    logger.info(
        "backup %s downloaded by %s from %s (%s)",
        backup.pk,
        getattr(user, "username", "?"),
        copy.storage.name,
        method,
    )
    return download
