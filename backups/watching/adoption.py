"""Adopting the files another tool wrote: one listing of the watched folder, and for each new
file one read (its SHA-256 and size, streamed, in bounded memory) and one Backup row with its
copy and an ``adopt`` step. A file already adopted (deleted since or not) is never adopted again:
the scan that calls this holds the target's claim, and each row is written after a check in the
same transaction."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction

from backups.humanize import human_bytes
from backups.models import (
    Backup,
    BackupCopy,
    BackupStatus,
    BackupStep,
    CopyStatus,
    Proof,
    StepStatus,
    Storage,
    Target,
)
from backups.storages import BackupStorage, StoredObject

from .settings import WatchSettings

logger = logging.getLogger(__name__)

ADOPTED_BY = "watch"  # initiated_by of adopted backups: what tells them from runs
#: A file modified this recently may still be being written (a local file grows in place): it is
#: adopted by a later scan. Objects that appear whole (S3, a rename) lose only this delay.
SETTLE = timedelta(minutes=1)
EARLIEST = datetime.min.replace(tzinfo=UTC)
TOUCH_EVERY = 30.0  # seconds between the scanner's signs of life while it reads a large file


@dataclass
class Adoption:
    """What one pass found: the files adopted, those left for later, and what could not be read."""

    seen: int = 0
    adopted: list[Backup] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # still settling, or changed while read
    errors: list[str] = field(default_factory=list)


def list_watched(storage: BackupStorage, watch: WatchSettings) -> list[StoredObject]:
    """The objects under the watched folder whose names match the pattern, oldest first.
    Raises StorageError when the storage cannot be listed."""
    folder = f"{watch.prefix}/"
    found = [
        item
        for item in storage.list_objects()
        if item.path.startswith(folder) and watch.matches(PurePosixPath(item.path).name)
    ]
    return sorted(found, key=lambda item: (item.modified or EARLIEST, item.path))


def adopt_new(
    target: Target,
    row: Storage,
    storage: BackupStorage,
    watch: WatchSettings,
    now: datetime,
    touch: Callable[[], None],
) -> Adoption:
    """Adopt every matching file under the watched folder not adopted before. Raises StorageError
    only when the listing fails; a file that cannot be read is reported in ``errors``."""
    listed = list_watched(storage, watch)
    result = Adoption(seen=len(listed))
    known = set(
        Backup.objects.filter(target=target, initiated_by=ADOPTED_BY).values_list("file_path", flat=True)
    )
    for item in listed:
        if item.path in known:
            continue
        if item.modified is not None and item.modified > now - SETTLE:
            result.waiting.append(f"{item.path}: modified {item.modified:%H:%M:%S}, still settling")
            continue
        try:
            backup = _adopt(target, row, storage, watch, item, now, touch)
        except Exception as exc:  # one unreadable file must not stop the others
            result.errors.append(f"{item.path}: {exc}")
            logger.warning("watch of %s: cannot adopt %s: %s", target.name, item.path, exc)
            continue
        if backup is None:
            result.waiting.append(f"{item.path}: changed while it was read; adopted by a later scan")
        else:
            result.adopted.append(backup)
    return result


def _adopt(
    target: Target,
    row: Storage,
    storage: BackupStorage,
    watch: WatchSettings,
    item: StoredObject,
    now: datetime,
    touch: Callable[[], None],
) -> Backup | None:
    size, sha256 = _digest(storage, item.path, touch)
    if size != item.size:
        return None  # still growing, or replaced between the listing and the read
    name = PurePosixPath(item.path).name
    named = watch.time_in_name(name, ZoneInfo(target.timezone))
    moment = named or item.modified or now
    source = "its name" if named else "the object's modified time" if item.modified else "the scan"
    retention_days = target.retention.get("retention_days") if isinstance(target.retention, dict) else None
    with transaction.atomic():
        if Backup.objects.filter(target=target, initiated_by=ADOPTED_BY, file_path=item.path).exists():
            return None
        backup = Backup.objects.create(
            target=target,
            backup_type="full",
            backup_name=name[:255],
            file_path=item.path,
            file_size=size,
            raw_size=size,  # the bytes as the other tool wrote them: what the shrink rule compares
            checksum=sha256,
            status=BackupStatus.SUCCESS,
            started_at=moment,
            completed_at=item.modified or now,
            compression="none",  # never decoded here: verification re-reads the stored bytes
            retention_days=retention_days,
            expires_at=moment + timedelta(days=retention_days) if retention_days else None,
            initiated_by=ADOPTED_BY,
            proof=Proof.STORED,
            proof_at=now,
            engine_info={
                "adopted": {
                    "storage": row.name,
                    "etag": item.etag,
                    "modified": item.modified.isoformat() if item.modified else None,
                    "time_from": source,
                }
            },
            notes=f"adopted from storage {row.name}: written by another tool; its time is from {source}",
        )
        BackupCopy.objects.create(
            backup=backup,
            target=target,
            storage=row,
            path=item.path,
            size=size,
            etag=item.etag,
            version=item.version,
            status=CopyStatus.STORED,
        )
        BackupStep.objects.create(
            backup=backup,
            name="adopt",
            status=StepStatus.SUCCESS,
            started_at=now,
            completed_at=now,
            bytes=size,
            message=f"adopted {storage.location(item.path)}: {human_bytes(size)}, sha256 {sha256}",
        )
    logger.info("watch of %s adopted %s as backup %s (%s bytes)", target.name, item.path, backup.pk, size)
    return backup


def _digest(storage: BackupStorage, path: str, touch: Callable[[], None]) -> tuple[int, str]:
    """(size, SHA-256) of the object, read once as a stream, the scanner touching its claim."""
    sha = hashlib.sha256()
    size = 0
    last = time.monotonic()
    with contextlib.closing(storage.open_reader(path)) as handle:
        while chunk := handle.read(settings.BACKUPSITE_CHUNK_SIZE):
            sha.update(chunk)
            size += len(chunk)
            if time.monotonic() - last > TOUCH_EVERY:
                touch()
                last = time.monotonic()
    return size, sha.hexdigest()
