"""Where a backup run writes: one destination per storage (checked writable first, a required
one retried), each upload recorded as a step, failed copies retried from a confirmed one, and
every trace of a failed run removed."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Iterator

from django.conf import settings

from backups import secrets
from backups.models import Backup, BackupCopy, CopyStatus, Storage
from backups.resources import storage_for
from backups.runs import destinations as copies
from backups.runs.destinations import Destination
from backups.runs.steps import describe_error, record_step
from backups.storages import StorageError
from backups.streaming.pipeline import StreamResult

logger = logging.getLogger("backups.runs.service")


def open_destinations(backup: Backup, rows: list[Storage]) -> list[Destination]:
    """One Destination per storage. A required storage that cannot be written now is retried
    after each configured delay, then fails the run before anything is dumped; an optional one
    is carried along as failed, to be retried from a confirmed copy once the backup is stored."""
    destinations: list[Destination] = []
    try:
        for row in rows:
            destinations.append(_destination(backup, row))
    except BaseException:
        close_all(destinations)
        raise
    return destinations


def _destination(backup: Backup, row: Storage) -> Destination:
    copy = BackupCopy.objects.create(backup=backup, storage=row, path="")
    try:
        storage = storage_for(row)
    except (StorageError, secrets.SecretError) as exc:
        raise StorageError(f"storage {row.name}: {describe_error(exc)}") from None
    destination = Destination(row=row, storage=storage, copy=copy)
    delays = [0.0, *settings.BACKUPSITE_COPY_RETRY_DELAYS] if row.required else [0.0]
    for delay in delays:
        time.sleep(delay)
        try:
            storage.check_writable()
            destination.error = ""
            break
        except StorageError as exc:
            destination.error = describe_error(exc)
    if destination.error and row.required:
        storage.close()
        raise StorageError(destination.error)
    return destination


def close_all(destinations: Iterable[Destination]) -> None:
    """Release every storage's connection (SFTP and FTP sessions, HTTP pools)."""
    for destination in destinations:
        with contextlib.suppress(Exception):
            destination.storage.close()


@contextlib.contextmanager
def upload_step(backup: Backup, destination: Destination, attempt: int = 0) -> Iterator[None]:
    label = f"storage {destination.name}" + (f", retry {attempt}" if attempt else "")
    with record_step(backup, "upload", label) as step:
        yield
        stored = destination.stored
        assert stored is not None
        step.bytes = stored.size
        step.message = f"{label}: {destination.storage.location(backup.file_path)}"
        destination.copy.size = stored.size
        destination.copy.etag = stored.etag[:255]
        destination.copy.version = stored.version[:255]
        destination.copy.save(update_fields=["size", "etag", "version"])


def retry_failed_copies(
    backup: Backup, destinations: list[Destination], source: Destination, result: StreamResult
) -> None:
    """Retry each failed copy with backoff from a confirmed copy; each attempt is a step."""
    for destination in destinations:
        if destination.confirmed:
            continue
        logger.warning(
            "backup %s: copy to %s failed (%s); retrying from %s",
            backup.pk, destination.name, destination.error, source.name,
        )  # fmt: skip
        copies.replicate(
            source,
            destination,
            backup.file_path,
            result.size,
            result.sha256,
            settings.BACKUPSITE_COPY_RETRY_DELAYS,
            functools.partial(record_attempt, backup),
        )
    raise_for_required(destinations)


def record_attempt(backup: Backup, destination: Destination, attempt: int, error: str) -> None:
    with contextlib.suppress(StorageError), upload_step(backup, destination, attempt):
        if error:
            raise StorageError(f"storage {destination.name}, retry {attempt}: {error}")


def raise_for_required(destinations: list[Destination]) -> None:
    failed = [d for d in destinations if d.required and not d.confirmed]
    if failed:
        raise StorageError(
            "required cop" + ("y" if len(failed) == 1 else "ies") + " failed: "
            + "; ".join(f"{d.failure} (after {d.attempts} retr{'y' if d.attempts == 1 else 'ies'})" for d in failed)
        )  # fmt: skip


def discard_all(destinations: Iterable[Destination]) -> None:
    """Remove every trace of a failed run from storage: partial uploads, committed objects and
    their manifests."""
    for destination in destinations:
        destination.discard()
        destination.copy.status = CopyStatus.FAILED
        destination.copy.error_message = destination.error or "the backup failed"
        destination.copy.save(update_fields=["status", "error_message"])
