"""The streaming path: source stream -> compress -> (encrypt) -> sha256/count -> sinks.

Moves bytes only: no ORM, no settings. Memory is bounded by the chunk size; sizes, digests and
progress come back as values and callbacks for the service layer to record.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from backups.streaming.codecs import Transform, compressor

ProgressCallback = Callable[[int, int], None]  # (raw bytes read, stored bytes written)


class PipelineError(Exception):
    """The stream could not be produced or stored completely."""


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class StreamResult:
    raw_size: int
    size: int
    sha256: str
    seconds: float


class _Throttle:
    def __init__(self, callback: ProgressCallback | None, interval: float) -> None:
        self.callback, self.interval = callback, interval
        self.last = time.monotonic()

    def __call__(self, raw: int, stored: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.callback is not None and (force or now - self.last >= self.interval):
            self.last = now
            self.callback(raw, stored)


def stream_backup(
    source: BinaryIO,
    sinks: Sequence[Sink],
    compression: str,
    *,
    extra_transforms: Sequence[Transform] = (),
    on_progress: ProgressCallback | None = None,
    chunk_size: int = 1024 * 1024,
    progress_interval: float = 1.0,
) -> StreamResult:
    """Stream ``source`` through compression (and any further transforms) into every sink.

    Raises :class:`PipelineError` for an empty source; errors from the source or a sink
    propagate unchanged so the caller can name the failing side.
    """
    started = time.monotonic()
    transforms: list[Transform] = [compressor(compression), *extra_transforms]
    digest = hashlib.sha256()
    raw = stored = 0
    progress = _Throttle(on_progress, progress_interval)

    def emit(data: bytes) -> None:
        nonlocal stored
        if data:
            digest.update(data)
            for sink in sinks:
                sink.write(data)
            stored += len(data)

    def push(data: bytes, final: bool) -> None:
        for transform in transforms:
            data = transform.update(data) if data else b""
            if final:
                data += transform.finish()
        emit(data)

    try:
        while chunk := source.read(chunk_size):
            raw += len(chunk)
            push(chunk, final=False)
            progress(raw, stored)
        if raw == 0:
            raise PipelineError("the dump is empty: the source produced no data")
        push(b"", final=True)
    except BaseException:
        for transform in transforms:  # a transform with a thread of its own (encryption) ends it
            close = getattr(transform, "close", None)
            if close is not None:
                close()
        raise
    progress(raw, stored, force=True)
    return StreamResult(
        raw_size=raw, size=stored, sha256=digest.hexdigest(), seconds=time.monotonic() - started
    )


class HashingReader:
    """Wraps a readable stream, hashing and counting every byte read through it."""

    def __init__(
        self,
        source: BinaryIO,
        on_progress: Callable[[int], None] | None = None,
        progress_interval: float = 1.0,
    ) -> None:
        self._source = source
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._progress = _Throttle(
            (lambda read, _stored: on_progress(read)) if on_progress else None, progress_interval
        )

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.sha256.update(data)
        self.size += len(data)
        self._progress(self.size, 0)
        return data

    def drain(self, chunk_size: int = 1024 * 1024) -> None:
        while self.read(chunk_size):
            pass

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


class BackgroundWriter:
    """Runs a sink's ``write`` calls in a thread behind a bounded queue, so copies to several
    storages (and compression in the caller's thread) proceed at once. Memory is bounded by
    ``depth`` chunks. A failure of the sink surfaces on the next :meth:`write` or on
    :meth:`finish`; after it the thread only discards, so a writer never blocks forever."""

    _DONE = object()

    def __init__(self, sink: Sink, name: str, depth: int = 4) -> None:
        self._sink = sink
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name=f"copy-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if self.error is None and not self._cancelled:
                try:
                    self._sink.write(item)  # type: ignore[arg-type]
                except BaseException as exc:  # handed to the caller's thread
                    self.error = exc

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(data)

    def finish(self) -> None:
        """Wait until every queued chunk is written; raise the sink's error if it failed."""
        if self._thread.is_alive():
            self._queue.put(self._DONE)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self, timeout: float) -> None:
        """Stop without writing what is queued; wait up to ``timeout`` for a write in progress
        (the caller aborts the sink first, which makes a write stuck in the network fail)."""
        self._cancelled = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(self._DONE)
        self._thread.join(timeout)
