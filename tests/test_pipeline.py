"""The streaming path: source -> compression -> sha256/size -> sinks, with bounded memory."""

from __future__ import annotations

import binascii
import hashlib
import io
import os
import random
import time
import tracemalloc

import pytest

from backups.streaming.codecs import COMPRESSIONS, DecompressingReader
from backups.streaming.pipeline import (
    HashingReader,
    PipelineError,
    StreamResult,
    dump_profile,
    pace,
    stream_backup,
)

SOURCE = b"".join(f"row {i}, value {i * 7 % 1000}\n".encode() for i in range(100_000)) + os.urandom(100_000)


class BytesSink:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.writes += 1

    @property
    def data(self) -> bytes:
        return bytes(self.buffer)


class HashingSink:
    """Keeps only a digest and a count, so it holds nothing of the stream."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.sha256.update(data)
        self.size += len(data)


class FailingSink:
    def __init__(self, after: int) -> None:
        self.after = after
        self.seen = 0

    def write(self, data: bytes) -> None:
        self.seen += len(data)
        if self.seen > self.after:
            raise OSError(28, "No space left on device")


class GeneratedSource:
    """``total`` bytes of pseudo-random but compressible data (hex digits), made chunk by chunk."""

    def __init__(self, total: int) -> None:
        self.remaining = total
        self.produced = 0
        self.rng = random.Random(1234)

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        size = min(self.remaining if size < 0 else size, self.remaining, 1024 * 1024)
        chunk = binascii.hexlify(self.rng.randbytes((size + 1) // 2))[:size]
        self.remaining -= len(chunk)
        self.produced += len(chunk)
        return chunk


def decompressed(data: bytes, compression: str) -> bytes:
    return DecompressingReader(io.BytesIO(data), compression).read()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_it_reports_the_exact_sha256_and_size_of_the_stored_bytes(compression: str) -> None:
    sink = BytesSink()
    result = stream_backup(io.BytesIO(SOURCE), [sink], compression, chunk_size=64 * 1024)
    assert result.size == len(sink.data)
    assert result.sha256 == hashlib.sha256(sink.data).hexdigest()
    assert result.raw_size == len(SOURCE)
    assert result.seconds >= 0
    assert decompressed(sink.data, compression) == SOURCE


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_it_stores_compressed_bytes_not_the_raw_source(compression: str) -> None:
    sink = BytesSink()
    result = stream_backup(io.BytesIO(SOURCE), [sink], compression)
    assert result.size < result.raw_size
    assert sink.data != SOURCE


def test_it_writes_identical_bytes_to_every_sink() -> None:
    sinks = [BytesSink(), BytesSink(), BytesSink()]
    result = stream_backup(io.BytesIO(SOURCE), sinks, "zstd", chunk_size=10_000)
    assert sinks[0].data == sinks[1].data == sinks[2].data
    assert all(len(sink.data) == result.size for sink in sinks)
    assert all(sink.writes == sinks[0].writes for sink in sinks)


def test_it_counts_the_raw_input_whatever_the_chunk_size() -> None:
    for chunk_size in (1_000, 4_096, 1024 * 1024, len(SOURCE) + 1):
        result = stream_backup(io.BytesIO(SOURCE), [BytesSink()], "gzip", chunk_size=chunk_size)
        assert result.raw_size == len(SOURCE)


def test_it_gives_the_same_stored_bytes_for_any_chunk_size_without_compression() -> None:
    small, large = BytesSink(), BytesSink()
    stream_backup(io.BytesIO(SOURCE), [small], "none", chunk_size=999)
    stream_backup(io.BytesIO(SOURCE), [large], "none", chunk_size=1024 * 1024)
    assert small.data == large.data == SOURCE


def test_it_rejects_an_empty_source() -> None:
    sink = BytesSink()
    with pytest.raises(PipelineError, match="empty"):
        stream_backup(io.BytesIO(b""), [sink], "gzip")
    assert sink.data == b""


def test_it_propagates_an_oserror_from_a_sink() -> None:
    healthy = BytesSink()
    with pytest.raises(OSError, match="No space left") as caught:
        stream_backup(io.BytesIO(SOURCE), [healthy, FailingSink(after=1_000)], "none", chunk_size=4_096)
    assert caught.value.errno == 28
    assert not isinstance(caught.value, PipelineError)


def test_it_propagates_an_error_from_the_source() -> None:
    class BrokenSource:
        def __init__(self) -> None:
            self.reads = 0

        def read(self, size: int = -1) -> bytes:
            self.reads += 1
            if self.reads > 2:
                raise OSError(5, "Input/output error")
            return b"x" * size

    with pytest.raises(OSError, match="Input/output error"):
        stream_backup(BrokenSource(), [BytesSink()], "gzip", chunk_size=1_000)  # type: ignore[arg-type]


def test_it_applies_extra_transforms_after_compression() -> None:
    class Reverse:
        """A toy transform that buffers everything and emits it reversed at the end."""

        def __init__(self) -> None:
            self.buffer = bytearray()

        def update(self, data: bytes) -> bytes:
            self.buffer += data
            return b""

        def finish(self) -> bytes:
            return bytes(reversed(self.buffer))

    sink = BytesSink()
    result = stream_backup(io.BytesIO(SOURCE), [sink], "gzip", extra_transforms=[Reverse()], chunk_size=8_192)
    assert result.sha256 == hashlib.sha256(sink.data).hexdigest()
    assert decompressed(bytes(reversed(sink.data)), "gzip") == SOURCE


def test_it_reports_progress_for_every_chunk_with_interval_zero() -> None:
    calls: list[tuple[int, int]] = []
    chunk = 10_000
    result = stream_backup(
        io.BytesIO(SOURCE),
        [BytesSink()],
        "none",
        on_progress=lambda raw, stored: calls.append((raw, stored)),
        chunk_size=chunk,
        progress_interval=0,
    )
    chunks = -(-len(SOURCE) // chunk)
    assert len(calls) == chunks + 1  # once per chunk, plus the final report
    assert [raw for raw, _ in calls[:chunks]] == [min((i + 1) * chunk, len(SOURCE)) for i in range(chunks)]
    assert calls[-1] == (result.raw_size, result.size)
    raws = [raw for raw, _ in calls]
    assert raws == sorted(raws)


def test_it_reports_progress_once_at_the_end_with_a_huge_interval() -> None:
    calls: list[tuple[int, int]] = []
    result = stream_backup(
        io.BytesIO(SOURCE),
        [BytesSink()],
        "zstd",
        on_progress=lambda raw, stored: calls.append((raw, stored)),
        chunk_size=10_000,
        progress_interval=3600,
    )
    assert calls == [(result.raw_size, result.size)]
    assert calls[0] == (len(SOURCE), result.size)


def test_it_streams_a_large_source_in_bounded_memory() -> None:
    total = 200 * 1024 * 1024
    source = GeneratedSource(total)
    sink = HashingSink()
    tracemalloc.start()
    try:
        result = stream_backup(source, [sink], "zstd", chunk_size=1024 * 1024)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert source.produced == total
    assert result.raw_size == total
    assert result.size == sink.size
    assert result.sha256 == sink.sha256.hexdigest()
    # Hex digits compress to a bit over half: the stored stream is large too, not just the input.
    assert total * 0.4 < result.size < total * 0.7
    assert peak < 20 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"


def test_it_hashes_and_counts_what_is_read_through_a_hashing_reader() -> None:
    seen: list[int] = []
    reader = HashingReader(io.BytesIO(SOURCE), on_progress=seen.append, progress_interval=0)
    reader.drain(chunk_size=50_000)
    assert reader.size == len(SOURCE)
    assert reader.hexdigest() == hashlib.sha256(SOURCE).hexdigest()
    assert seen and seen[-1] == len(SOURCE)


class Upper:
    """A toy second transform (as encryption is one)."""

    def update(self, data: bytes) -> bytes:
        return data.upper()

    def finish(self) -> bytes:
        return b""


class SlowSource:
    """Sleeps before each chunk, as a dump tool that sets the pace does."""

    def __init__(self, chunks: int, delay: float) -> None:
        self.left, self.delay = chunks, delay

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        self.left -= 1
        time.sleep(self.delay)
        return b"x" * 1000


def test_it_accounts_for_the_streaming_threads_time_stage_by_stage() -> None:
    source = SlowSource(chunks=5, delay=0.05)
    result = stream_backup(source, [BytesSink()], "gzip", extra_transforms=[Upper()])  # type: ignore[arg-type]
    stages = result.stages
    assert set(stages) == {"first_byte", "source", "compress", "encrypt", "store"}
    # The first chunk's wait is the source starting; the four after it are waits for more bytes.
    assert stages["first_byte"] >= 0.05
    assert stages["source"] >= 4 * 0.05
    # Every moment of the run is charged to exactly one stage.
    assert sum(stages.values()) == pytest.approx(result.seconds, abs=0.02)
    assert pace(stages) == "the source"


def test_it_describes_the_dump_step_with_its_profile() -> None:
    result = StreamResult(
        raw_size=512 * 1024 * 1024,
        size=4 * 1024 * 1024,
        sha256="0" * 64,
        seconds=1.8,
        stages={"first_byte": 0.21, "source": 1.3, "compress": 0.25, "store": 0.04},
    )
    text = dump_profile(result, "PostgreSQL", opening=0.03, finishing=0.07)
    assert text == (
        "512.0 MiB from PostgreSQL in 1.9 s (269.5 MiB/s): opening 0.03 s, first byte after 0.21 s; "
        "waiting on the source 1.3 s, compressing 0.25 s, storing 0.04 s; finishing 0.07 s; "
        "paced by the source"
    )
    slow_storage = StreamResult(1024, 10, "0" * 64, 2.0, {"first_byte": 0.0, "source": 0.1, "store": 1.9})
    assert dump_profile(slow_storage, "SQLite", 0.0, 0.0).endswith("storing 1.9 s; paced by the storages")
    assert (
        dump_profile(StreamResult(1024, 10, "0" * 64, 0.0), "SQLite", 0.0, 0.0)
        == "1.0 KiB from SQLite in 0.00 s"
    )
