"""Copies of one backup in several storages: fan-out while streaming, commit, confirm, retry.

The dump streams once. Every destination receives the chunks through its own thread (so a slow
remote storage and a fast local disk proceed at once, memory bounded by a few chunks each). A
destination that fails mid-stream is dropped, its partial upload aborted, while the others go
on; the stream itself fails only when every destination has failed. After the stream every
copy is committed and confirmed (size and SHA-256); each copy that failed anywhere is then
retried with backoff by re-reading a confirmed copy. The caller decides what a failed copy
means (a required storage fails the run). No ORM here beyond saving the copy rows it is given.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from backups.models import BackupCopy, Storage
from backups.runs.steps import describe_error
from backups.storages import BackupStorage, ObjectWriter, StorageError, StoredObject
from backups.streaming.pipeline import BackgroundWriter

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
        objects = [self.copy.path] * (self.stored is not None)
        objects += [self.copy.manifest_path] * self.manifest_stored
        for path in objects:
            try:
                self.storage.delete(path)
            except StorageError as exc:
                logger.error("could not remove %s from %s: %s", path, self.name, exc)
        self.stored = None
        self.confirmed = self.manifest_stored = False


class FanOut:
    """The single sink the pipeline writes to: hands each chunk to every live destination."""

    def __init__(self, destinations: Sequence[Destination]) -> None:
        self.destinations = destinations

    def open(self, path: str) -> None:
        for destination in self.destinations:
            destination.copy.path = path
            destination.copy.save(update_fields=["path"])
        for destination in self.live():  # one that failed its start-up check waits for a retry
            try:
                destination.writer = destination.storage.open_writer(path)
            except Exception as exc:
                destination.fail(exc)
                continue
            destination.background = BackgroundWriter(destination.writer, destination.name)
        self._check_any_alive()

    def write(self, data: bytes) -> None:
        for destination in self.live():
            assert destination.background is not None
            try:
                destination.background.write(data)
            except Exception as exc:
                logger.warning("copy to %s failed mid-stream: %s", destination.name, describe_error(exc))
                destination.fail(exc)
        self._check_any_alive()

    def live(self) -> list[Destination]:
        return [d for d in self.destinations if not d.error]

    def _check_any_alive(self) -> None:
        if not self.live():
            raise StorageError("every copy failed: " + "; ".join(d.failure for d in self.destinations))

    def commit(self, record: Callable[[Destination], contextlib.AbstractContextManager[object]]) -> None:
        """Finish and commit every live copy, each inside ``record(destination)`` (a step)."""
        for destination in self.live():
            assert destination.background is not None and destination.writer is not None
            try:
                with record(destination):
                    destination.background.finish()
                    destination.stored = destination.writer.commit()
                    destination.writer = destination.background = None
            except Exception as exc:
                destination.fail(exc)

    def discard(self) -> None:
        for destination in self.destinations:
            destination.discard()


def confirm(destination: Destination, path: str, size: int, sha256: str) -> None:
    """Re-check a committed copy's size and SHA-256 (the kind's own proof, usually a re-read)."""
    try:
        destination.storage.confirm(path, size, sha256)
        destination.confirmed = True
    except Exception as exc:
        destination.fail(exc)


def confirm_all(destinations: Sequence[Destination], path: str, size: int, sha256: str) -> None:
    """Confirm several copies at once, each re-read in its own thread (no ORM in there)."""
    if len(destinations) <= 1:
        for destination in destinations:
            confirm(destination, path, size, sha256)
        return
    with ThreadPoolExecutor(max_workers=len(destinations), thread_name_prefix="confirm") as pool:
        list(pool.map(lambda destination: confirm(destination, path, size, sha256), destinations))


def replicate(
    source: Destination,
    destination: Destination,
    path: str,
    size: int,
    sha256: str,
    delays: Iterable[float],
    on_attempt: Callable[[Destination, int, str], None],
) -> bool:
    """Copy ``path`` from a confirmed copy into ``destination``, retrying after each delay.
    Calls ``on_attempt(destination, attempt, error_or_empty)`` after every attempt."""
    for attempt, delay in enumerate(delays, start=1):
        time.sleep(delay)
        destination.attempts += 1
        destination.error = ""
        try:
            _copy_once(source.storage, destination, path)
            destination.storage.confirm(path, size, sha256)
        except Exception as exc:
            destination.fail(exc)
            on_attempt(destination, attempt, destination.error)
            continue
        destination.confirmed = True
        on_attempt(destination, attempt, "")
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
