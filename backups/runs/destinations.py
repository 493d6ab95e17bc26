"""Where a backup run writes, and the one writer of its BackupCopy rows.

One destination per storage, checked writable first (a required one retried). The dump streams
once: every destination receives the chunks through its own thread (so a slow remote storage
and a fast local disk proceed at once, memory bounded by a few chunks each), except a writer
whose writes return at once (a local disk's page cache, S3's own part threads), which is
written from the streaming thread: a thread hand-off per chunk cost ~10% of a fast dump. A destination that
fails mid-stream is dropped, its partial upload aborted, while the others go on; the stream
fails only when every destination has failed. After the stream every copy is committed (each an
``upload`` step) and confirmed (size and SHA-256); each copy that failed anywhere is retried
with backoff by re-reading a confirmed copy. A failed run leaves no trace in any storage.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import InterfaceError, OperationalError

from backups import secrets
from backups.models import Backup, BackupCopy, CopyStatus, Storage
from backups.resources import storage_for
from backups.runs.steps import describe_error, record_step
from backups.storages import BackupStorage, ObjectWriter, StorageError, StoredObject
from backups.streaming.pipeline import BackgroundWriter, StreamResult

logger = logging.getLogger(__name__)
READ_CHUNK = 1024 * 1024
JOIN_TIMEOUT = 30.0  # after an abort, how long to wait for a copy thread stuck in the network


@dataclass
class Destination:
    row: Storage
    storage: BackupStorage
    copy: BackupCopy
    writer: ObjectWriter | None = None
    background: BackgroundWriter | None = None
    stored: StoredObject | None = None
    confirmed: bool = False
    manifest_stored: bool = False
    error: str = ""
    attempts: int = 0

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def failure(self) -> str:
        """The error, prefixed with the storage's name unless it already names it."""
        return self.error if self.error.startswith(f"{self.name}: ") else f"{self.name}: {self.error}"

    @property
    def required(self) -> bool:
        return bool(self.row.required)

    def fail(self, exc: BaseException | str) -> None:
        """Drop this copy: remember why, remove whatever it wrote."""
        self.error = exc if isinstance(exc, str) else describe_error(exc)
        self.discard()

    def discard(self) -> None:
        """Abort a partial upload (or delete a committed object) and stop the copy thread."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.abort()
        if self.background is not None:
            self.background.cancel(JOIN_TIMEOUT)
        self.writer = self.background = None
        objects = [self.copy.path] if self.stored is not None else []
        if self.manifest_stored:
            objects.append(self.copy.manifest_path)
        for path in objects:
            try:
                self.storage.delete(path)
            except StorageError as exc:
                logger.error("could not remove %s from %s: %s", path, self.name, exc)
        self.stored = None
        self.confirmed = self.manifest_stored = False


# -- opening and closing -------------------------------------------------------------------------


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
    down = _seen_down(row)
    delays = [0.0, *settings.BACKUPSITE_COPY_RETRY_DELAYS] if row.required and not down else [0.0]
    for delay in delays:
        time.sleep(delay)
        try:
            storage.check_writable()
            destination.error = ""
            break
        except StorageError as exc:
            destination.error = describe_error(exc)
    if destination.error and row.required:
        _DOWN[row.pk] = time.monotonic()
        if down:
            destination.error += (
                f" (not retried: this worker found it unreachable {down:.0f} s ago, after every retry)"
            )
        storage.close()
        raise StorageError(destination.error)
    _DOWN.pop(row.pk, None)
    return destination


# Required storages this process found unreachable after every retry: storage pk -> when
# (time.monotonic()). While one stays down, each run probes it once instead of waiting through
# the retries again: an outage fails runs at once, not after minutes holding a worker.
_DOWN: dict[int, float] = {}


def _seen_down(row: Storage) -> float | None:
    """Seconds since this process last found ``row`` unreachable after every retry, if that was
    within BACKUPSITE_STORAGE_DOWN_SECONDS; else None."""
    since = _DOWN.get(row.pk)
    if since is None:
        return None
    age = time.monotonic() - since
    return age if age < settings.BACKUPSITE_STORAGE_DOWN_SECONDS else None


def close_all(destinations: Iterable[Destination]) -> None:
    """Release every storage's connection (SFTP and FTP sessions, HTTP pools)."""
    for destination in destinations:
        with contextlib.suppress(Exception):
            destination.storage.close()


def discard_all(destinations: Iterable[Destination]) -> None:
    """Remove every trace of a failed run from storage: partial uploads, committed objects and
    their manifests; then mark the copy rows failed (every storage is cleared first, so a
    catalog that cannot be written leaves no copy behind)."""
    destinations = list(destinations)
    for destination in destinations:
        destination.discard()
    for destination in destinations:
        destination.copy.status = CopyStatus.FAILED
        destination.copy.error_message = destination.error or "the backup failed"
        destination.copy.save(update_fields=["status", "error_message"])


def name_copies(destinations: Iterable[Destination], path: str) -> None:
    """Record the object name every copy is about to be written under (the sweep of a lost run
    removes what was written there)."""
    for destination in destinations:
        destination.copy.path = path
        destination.copy.save(update_fields=["path"])


# -- streaming into every destination ------------------------------------------------------------


class FanOut:
    """The single sink the pipeline writes to: hands each chunk to every live destination."""

    def __init__(self, backup: Backup, destinations: Sequence[Destination]) -> None:
        self.backup = backup
        self.destinations = destinations

    def open(self, path: str) -> None:
        """Open a writer for ``path`` on every live destination (their rows already name it:
        :func:`name_copies`)."""
        for destination in self.live():  # one that failed its start-up check waits for a retry
            try:
                destination.writer = destination.storage.open_writer(path)
            except Exception as exc:
                destination.fail(exc)
                continue
            if not destination.writer.returns_quickly:
                destination.background = BackgroundWriter(destination.writer, destination.name)
        self._check_any_alive()

    def write(self, data: bytes) -> None:
        for destination in self.live():
            sink = destination.background or destination.writer
            assert sink is not None
            try:
                sink.write(data)
            except Exception as exc:
                logger.warning("copy to %s failed mid-stream: %s", destination.name, describe_error(exc))
                destination.fail(exc)
        self._check_any_alive()

    def live(self) -> list[Destination]:
        return [d for d in self.destinations if not d.error]

    def _check_any_alive(self) -> None:
        if not self.live():
            raise StorageError("every copy failed: " + "; ".join(d.failure for d in self.destinations))

    def commit(self) -> None:
        """Finish and commit every live copy, each recorded as an ``upload`` step."""
        for destination in self.live():
            assert destination.writer is not None
            try:
                with _upload_step(self.backup, destination):
                    if destination.background is not None:
                        destination.background.finish()
                    destination.stored = destination.writer.commit()
                    destination.writer = destination.background = None
            except (OperationalError, InterfaceError):
                raise  # the catalog's failure, not this copy's: the run fails saying so
            except Exception as exc:
                destination.fail(exc)


@contextlib.contextmanager
def _upload_step(backup: Backup, destination: Destination, attempt: int = 0) -> Iterator[None]:
    label = f"storage {destination.name}" + (f", retry {attempt}" if attempt else "")

    def save_copy() -> None:
        destination.copy.save(update_fields=["size", "etag", "version"])

    with record_step(backup, "upload", label, also_save=save_copy) as step:
        yield
        stored = destination.stored
        assert stored is not None
        step.bytes = stored.size
        step.message = f"{label}: {destination.storage.location(backup.file_path)}"
        destination.copy.size = stored.size
        destination.copy.etag = stored.etag[:255]
        destination.copy.version = stored.version[:255]


# -- confirming, retrying, recording -------------------------------------------------------------


def confirm(destination: Destination, path: str, size: int, sha256: str) -> None:
    """Re-check a committed copy's size and SHA-256 (the kind's own proof, usually a re-read)."""
    try:
        destination.storage.confirm(path, size, sha256)
        destination.confirmed = True
    except Exception as exc:
        destination.fail(exc)


def confirm_all(destinations: Sequence[Destination], path: str, size: int, sha256: str) -> None:
    """Confirm the committed copies at once, each re-read in its own thread (no ORM in there)."""
    committed = [d for d in destinations if d.stored is not None]
    if len(committed) <= 1:
        for destination in committed:
            confirm(destination, path, size, sha256)
        return
    with ThreadPoolExecutor(max_workers=len(committed), thread_name_prefix="confirm") as pool:
        list(pool.map(lambda destination: confirm(destination, path, size, sha256), committed))


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
        _replicate(backup, source, destination, result, settings.BACKUPSITE_COPY_RETRY_DELAYS)
    raise_for_required(destinations)


def _replicate(
    backup: Backup,
    source: Destination,
    destination: Destination,
    result: StreamResult,
    delays: Iterable[float],
) -> bool:
    """Copy the backup from a confirmed copy into ``destination``, retrying after each delay;
    every attempt is an ``upload`` step."""
    for attempt, delay in enumerate(delays, start=1):
        time.sleep(delay)
        destination.attempts += 1
        destination.error = ""
        try:
            _copy_once(source.storage, destination, backup.file_path)
            destination.storage.confirm(backup.file_path, result.size, result.sha256)
        except Exception as exc:
            destination.fail(exc)
            _record_attempt(backup, destination, attempt)
            continue
        destination.confirmed = True
        _record_attempt(backup, destination, attempt)
        return True
    return False


def _copy_once(source: BackupStorage, destination: Destination, path: str) -> None:
    destination.storage.sweep_partials(path)
    writer = destination.storage.open_writer(path)
    destination.writer = writer
    try:
        with contextlib.closing(source.open_reader(path)) as reader:
            while chunk := reader.read(READ_CHUNK):
                writer.write(chunk)
        destination.stored = writer.commit()
    finally:
        destination.writer = None
        if destination.stored is None:
            writer.abort()


def _record_attempt(backup: Backup, destination: Destination, attempt: int) -> None:
    with contextlib.suppress(StorageError), _upload_step(backup, destination, attempt):
        if destination.error:
            raise StorageError(f"storage {destination.name}, retry {attempt}: {destination.error}")


def raise_for_required(destinations: list[Destination]) -> None:
    failed = [d for d in destinations if d.required and not d.confirmed]
    if failed:
        raise StorageError(
            "required cop" + ("y" if len(failed) == 1 else "ies") + " failed: "
            + "; ".join(f"{d.failure} (after {d.attempts} retr{'y' if d.attempts == 1 else 'ies'})" for d in failed)
        )  # fmt: skip


def store_manifests(destinations: list[Destination], path: str, manifest: bytes) -> None:
    """Write the manifest beside every confirmed copy; a required copy without one fails the run."""
    for destination in destinations:
        if not destination.confirmed:
            continue
        try:
            destination.storage.put_bytes(path, manifest)
            destination.manifest_stored = True
        except Exception as exc:
            destination.fail(exc)
    raise_for_required(destinations)


def record_outcomes(destinations: list[Destination]) -> None:
    """Save every copy's final status (STORED when confirmed, else FAILED with its error)."""
    for destination in destinations:
        destination.copy.status = CopyStatus.STORED if destination.confirmed else CopyStatus.FAILED
        destination.copy.error_message = destination.error
        destination.copy.save(update_fields=["status", "error_message"])
