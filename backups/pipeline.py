"""The streaming path: source stream -> compress -> (encrypt) -> sha256/count -> sinks.

Moves bytes only: no ORM, no settings. Memory is bounded by the chunk size; sizes, digests and
progress come back as values and callbacks for the service layer to record.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from .codecs import Transform, compressor

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

    while chunk := source.read(chunk_size):
        raw += len(chunk)
        push(chunk, final=False)
        progress(raw, stored)
    if raw == 0:
        raise PipelineError("the dump is empty: the source produced no data")
    push(b"", final=True)
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
