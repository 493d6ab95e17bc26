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
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from backups.humanize import human_bytes, human_duration
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
    # Where the pipeline's thread spent ``seconds`` (see :class:`StageClock`); adds up to it.
    stages: dict[str, float] = field(default_factory=dict)


class StageClock:
    """Where the streaming thread's time goes, in seconds per stage: ``first_byte`` (waiting for
    the source to start: the tool's own start-up, connection and catalog reads), ``source``
    (waiting for more bytes after that), ``compress``, ``encrypt`` (any further transform) and
    ``store`` (hashing and handing the bytes to the storages, including waiting for a full
    storage queue). A few clock reads per chunk (1 MiB by default): negligible, and every run
    says what set its pace (:func:`pace`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to ``stage``."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


STAGE_LABELS = {
    "first_byte": "first byte after",
    "source": "waiting on the source",
    "compress": "compressing",
    "encrypt": "encrypting",
    "store": "storing",
}


def pace(stages: dict[str, float]) -> str:
    """The stage that took most of a run's streaming time after its first byte, as words."""
    busy = {name: seconds for name, seconds in stages.items() if name != "first_byte"}
    if not busy:
        return ""
    slowest = max(busy, key=lambda name: busy[name])
    return {
        "source": "the source",
        "compress": "compression",
        "encrypt": "encryption",
        "store": "the storages",
    }.get(slowest, slowest)


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
    stage_names = ["compress"] + ["encrypt"] * len(extra_transforms)
    digest = hashlib.sha256()
    raw = stored = 0
    progress = _Throttle(on_progress, progress_interval)
    clock = StageClock()

    def emit(data: bytes) -> None:
        nonlocal stored
        if data:
            digest.update(data)
            for sink in sinks:
                sink.write(data)
            stored += len(data)
        clock.lap("store")

    def push(data: bytes, final: bool) -> None:
        for transform, stage in zip(transforms, stage_names, strict=True):
            data = transform.update(data) if data else b""
            if final:
                data += transform.finish()
            clock.lap(stage)
        emit(data)

    try:
        waiting = "first_byte"
        while chunk := source.read(chunk_size):
            clock.lap(waiting)
            waiting = "source"
            raw += len(chunk)
            push(chunk, final=False)
            progress(raw, stored)
        clock.lap(waiting)
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
        raw_size=raw,
        size=stored,
        sha256=digest.hexdigest(),
        seconds=time.monotonic() - started,
        stages=dict(clock.seconds),
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


def dump_profile(result: StreamResult, source_label: str, opening: float, finishing: float) -> str:
    """The dump step's message: how much came from where, how fast, and where the time went,
    e.g. ``489.2 MiB from PostgreSQL in 1.9 s (258.3 MiB/s): opening 0.03 s, first byte after
    0.21 s; waiting on the source 1.4 s, compressing 0.22 s, storing 0.03 s; finishing 0.04 s;
    paced by the source``. ``opening`` is the engine's own start (connections, snapshot) before
    the tool runs; ``finishing`` the time after the last byte (the tool's exit, the engine's
    own checks such as row counts)."""
    total = opening + result.seconds + finishing
    rate = f" ({human_bytes(result.raw_size / total)}/s)" if total > 0 else ""
    text = f"{human_bytes(result.raw_size)} from {source_label} in {human_duration(total)}{rate}"
    stages = result.stages
    start = [f"opening {human_duration(opening)}"] if opening >= 0.005 else []
    if "first_byte" in stages:
        start.append(f"first byte after {human_duration(stages['first_byte'])}")
    busy = [
        f"{STAGE_LABELS[name]} {human_duration(stages[name])}"
        for name in ("source", "compress", "encrypt", "store")
        if stages.get(name, 0.0) >= 0.005
    ]
    end = [f"finishing {human_duration(finishing)}"] if finishing >= 0.005 else []
    # Which side set the pace means something only when there was time to set: not for a tiny run.
    busy_seconds = sum(seconds for name, seconds in stages.items() if name != "first_byte")
    paced_by = pace(stages) if busy_seconds >= 0.1 else ""
    sections = [", ".join(start), ", ".join(busy), ", ".join(end)]
    sections += [f"paced by {paced_by}"] if paced_by else []
    detail = "; ".join(section for section in sections if section)
    return f"{text}: {detail}" if detail else text
