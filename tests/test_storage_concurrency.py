"""Uploads with several parts or blocks in flight, against the real servers (moto's S3, Azurite,
the GCS emulator): the parts really overlap, memory stays within the bound the docs state, and a
part that fails still aborts the whole upload and leaves nothing.

Memory is measured with ``tracemalloc`` (every Python allocation, in every thread): the test's
own allocations are one 1 MiB write at a time, so what the writer holds dominates the peak.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backups.storages import StorageError
from backups.storages import azure as azure_storage
from backups.storages import gcs as gcs_module
from backups.storages.azure import AzureStorage
from backups.storages.gcs import DEFAULT_UPLOAD_CHUNK_MIB, GCSStorage
from backups.storages.s3 import DEFAULT_CONCURRENCY, MIB, S3Storage
from tests.plugins.azure import azure_options
from tests.plugins.gcs import gcs_options
from tests.servers.azurite import AzuriteServer
from tests.servers.gcs import GCSServer
from tests.servers.proxy import cuttable_proxy
from tests.servers.s3 import S3Server

PART = 5  # MiB: S3's smallest part, so that a few parts make a test
WAIT = 60  # seconds a test waits for a condition on a loaded machine before it fails


SEED = memoryview(os.urandom(MIB))


def fresh_chunks(count: int) -> Iterator[bytes]:
    """``count`` distinct 1 MiB objects, as a pipeline hands over (never one object reused); each
    is allocated once, so the test itself holds no more than the chunk being written."""
    for number in range(count):
        yield b"".join((number.to_bytes(8, "big"), SEED[8:]))


def uploads(server: S3Server, bucket: str) -> list[dict[str, Any]]:
    return list(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(server: S3Server, bucket: str) -> list[str]:
    return [item["Key"] for item in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def part_threads(prefix: str = "s3-part") -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(prefix)]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def peak_while(action: Callable[[], None]) -> int:
    """Bytes allocated at the peak of ``action`` above what was allocated before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_it_uploads_parts_concurrently_by_default(s3_server: S3Server, s3_bucket: Callable[..., str]) -> None:
    bucket = s3_bucket()
    storage = S3Storage("s3", s3_server.options(bucket, part_size_mib=PART))
    assert storage.concurrency == DEFAULT_CONCURRENCY > 1
    # Each of the first DEFAULT_CONCURRENCY parts waits, on its way to moto, until all of them are
    # on their way: uploaded one after another, the first would wait alone and break the barrier.
    barrier = threading.Barrier(DEFAULT_CONCURRENCY, timeout=WAIT)
    numbers = itertools.count()
    senders: set[str] = set()

    def hold(**kwargs: Any) -> None:
        senders.add(threading.current_thread().name)
        if next(numbers) < DEFAULT_CONCURRENCY:
            barrier.wait()

    storage.client().meta.events.register("before-send.s3.UploadPart", hold)
    sha = hashlib.sha256()
    writer = storage.open_writer("app/parallel.bin")
    for chunk in fresh_chunks(PART * (DEFAULT_CONCURRENCY + 2) + 1):
        sha.update(chunk)
        writer.write(chunk)
    writer.commit()
    assert not barrier.broken
    assert len(senders) == DEFAULT_CONCURRENCY  # one thread per slot, reused for later parts
    assert storage.digest("app/parallel.bin")[1] == sha.hexdigest()  # parts in the right order
    storage.close()
    assert part_threads() == []


@pytest.mark.parametrize("concurrency", [1, DEFAULT_CONCURRENCY])
def test_it_holds_at_most_concurrency_plus_one_parts(
    s3_server: S3Server, s3_bucket: Callable[..., str], concurrency: int
) -> None:
    bucket = s3_bucket()
    with cuttable_proxy(s3_server.host, s3_server.port) as proxy:
        options = s3_server.options(bucket, part_size_mib=PART, upload_concurrency=concurrency)
        storage = S3Storage("s3", {**options, "endpoint_url": f"http://127.0.0.1:{proxy.port}"})
        storage.put_bytes("app/warm.bin", b"the client is built before the measure")
        # A slow link keeps every slot busy, so the writer has to wait for one before each part.
        proxy.throttle(40 * MIB, downstream=False)
        writer = storage.open_writer("app/bounded.bin")

        def upload() -> None:
            for chunk in fresh_chunks(PART * 3 * (concurrency + 1)):
                writer.write(chunk)
            writer.commit()

        peak = peak_while(upload)
        assert storage.size("app/bounded.bin") == PART * 3 * (concurrency + 1) * MIB
        storage.close()
    # (concurrency + 1) parts, plus the 1 MiB reads through which botocore hashes each part in
    # flight (SigV4 over plain HTTP signs the payload), plus 1 MiB for the requests around them.
    # Joining a part while every slot is busy would hold one part more: 5 MiB over this bound.
    bound = (concurrency + 1) * PART * MIB + (concurrency + 1) * MIB + MIB
    assert peak <= bound, f"{peak / MIB:.1f} MiB held at the peak, bound {bound / MIB:.1f} MiB"


def test_it_aborts_the_whole_upload_when_a_part_fails_with_parts_in_flight(
    s3_server: S3Server, s3_bucket: Callable[..., str]
) -> None:
    bucket = s3_bucket()
    with cuttable_proxy(s3_server.host, s3_server.port) as proxy:
        options = s3_server.options(bucket, part_size_mib=PART)
        storage = S3Storage("offsite", {**options, "endpoint_url": f"http://127.0.0.1:{proxy.port}"})
        writer = storage.open_writer("app/doomed.bin")
        chunks = fresh_chunks(40 * PART)
        for chunk in itertools.islice(chunks, 2 * PART):
            writer.write(chunk)
        upload_id = uploads(s3_server, bucket)[0]["UploadId"]
        deadline = time.monotonic() + WAIT
        while len(stored_parts(s3_server, bucket, upload_id)) < 2:  # two parts are on the server
            assert time.monotonic() < deadline, "the first parts never reached the server"
            time.sleep(0.05)
        # From now on any connection that carries a part is reset (every retry too); the small
        # requests, the abort among them, still pass.
        proxy.limit_connections(MIB)
        with pytest.raises(StorageError, match=r"offsite: upload failed for s3://.*app/doomed.bin"):
            for chunk in chunks:
                writer.write(chunk)
            writer.commit()
        # The writer aborted by itself: no object, no upload, no part, no thread left behind.
        assert uploads(s3_server, bucket) == []
        assert keys(s3_server, bucket) == []
        assert part_threads() == []
        with pytest.raises(StorageError, match="already closed"):
            writer.write(b"more")
        storage.close()


def stored_parts(server: S3Server, bucket: str, upload_id: str) -> list[dict[str, Any]]:
    key = uploads(server, bucket)[0]["Key"]
    return list(server.client().list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []))


# -- Azure: blocks staged concurrently -----------------------------------------------------------

_prefixes = itertools.count(1)


def azure(server: AzuriteServer, endpoint: str | None = None, **extra: Any) -> AzureStorage:
    options = azure_options(server, **extra)
    if endpoint:
        options["endpoint_url"] = f"{endpoint}/{server.account}"
    return AzureStorage("azure", options, prefix=f"concurrency-{next(_prefixes)}-{os.getpid()}")


def uncommitted(store: AzureStorage) -> list[str]:
    blobs = store.container.list_blobs(name_starts_with=f"{store.prefix}/", include=["uncommittedblobs"])
    return sorted(blob.name for blob in blobs)


def test_it_stages_azure_blocks_concurrently_by_default(azurite_server: AzuriteServer) -> None:
    concurrency = azure_storage.DEFAULT_CONCURRENCY
    assert concurrency > 1
    with cuttable_proxy(azurite_server.host, azurite_server.port) as proxy:
        store = azure(azurite_server, f"http://{proxy.host}:{proxy.port}")
        assert store.concurrency == concurrency
        writer = store.open_writer("db/parallel.bin")
        sha = hashlib.sha256()
        chunks = fresh_chunks(concurrency + 4)  # 1 MiB blocks (the test plugin's block size)
        first = next(chunks)
        sha.update(first)
        writer.write(first)  # the first block is staged before write() returns
        proxy.stall()  # nothing gets through: every block staged from now on stays on its way
        for chunk in itertools.islice(chunks, concurrency):
            sha.update(chunk)
            writer.write(chunk)
        # Every slot's block is being sent at the same time, each by its own thread.
        pending = writer.pending  # type: ignore[attr-defined]
        wait_until(lambda: sum(f.running() for f in pending) == concurrency, "blocks were not staged at once")
        assert len(part_threads("azure-block")) == concurrency
        proxy.allow()
        for chunk in chunks:
            sha.update(chunk)
            writer.write(chunk)
        assert writer.commit().size == (concurrency + 4) * MIB
        assert store.digest("db/parallel.bin")[1] == sha.hexdigest()  # blocks in the right order
    assert part_threads("azure-block") == []


@pytest.mark.parametrize("concurrency", [1, 4])
def test_it_holds_at_most_concurrency_plus_one_azure_blocks(
    azurite_server: AzuriteServer, concurrency: int
) -> None:
    block = 4
    with cuttable_proxy(azurite_server.host, azurite_server.port) as proxy:
        store = azure(
            azurite_server,
            f"http://{proxy.host}:{proxy.port}",
            block_size_mib=block,
            upload_concurrency=concurrency,
        )
        store.put_bytes("db/warm.bin", b"the client is built before the measure")
        proxy.throttle(40 * MIB, downstream=False)  # every slot stays busy
        writer = store.open_writer("db/bounded.bin")

        def upload() -> None:
            for chunk in fresh_chunks(block * 3 * (concurrency + 1)):
                writer.write(chunk)
            writer.commit()

        peak = peak_while(upload)
        assert store.size("db/bounded.bin") == block * 3 * (concurrency + 1) * MIB
    bound = (concurrency + 1) * block * MIB + 2 * MIB  # blocks, and the requests around them
    assert peak <= bound, f"{peak / MIB:.1f} MiB held at the peak, bound {bound / MIB:.1f} MiB"


def test_it_aborts_the_whole_azure_upload_when_a_block_fails_with_blocks_in_flight(
    azurite_server: AzuriteServer,
) -> None:
    with cuttable_proxy(azurite_server.host, azurite_server.port) as proxy:
        store = azure(azurite_server, f"http://{proxy.host}:{proxy.port}", upload_concurrency=4, retries=0)
        writer = store.open_writer("db/doomed.bin")
        chunks = fresh_chunks(40)
        for chunk in itertools.islice(chunks, 4):
            writer.write(chunk)
        pending = writer.pending  # type: ignore[attr-defined]
        wait_until(lambda: all(f.done() for f in pending), "the first blocks were never staged")
        assert uncommitted(store) != []
        # From now on every block's connection is reset (the SDK does not retry here); the small
        # requests, the abort's among them, still pass on fresh connections.
        proxy.cut()
        proxy.limit_connections(MIB // 2)
        with pytest.raises(StorageError, match=r"azure: upload failed for http://.*db/doomed.bin"):
            for chunk in chunks:
                writer.write(chunk)
            writer.commit()
        # The writer aborted by itself, after the blocks in flight had ended: nothing is left.
        assert uncommitted(store) == []
        assert not store.exists("db/doomed.bin")
        assert part_threads("azure-block") == []


# -- GCS: large chunks, held once ----------------------------------------------------------------


def test_it_uploads_gcs_in_large_chunks_unless_told_otherwise(gcs_server: GCSServer) -> None:
    assert GCSStorage("g", gcs_options(gcs_server)).upload_chunk_size == DEFAULT_UPLOAD_CHUNK_MIB * MIB
    assert GCSStorage("g", gcs_options(gcs_server)).chunk_size == 8 * MIB  # downloads
    assert GCSStorage("g", gcs_options(gcs_server, chunk_size_mib=2)).upload_chunk_size == 2 * MIB
    assert GCSStorage("g", gcs_options(gcs_server, upload_chunk_mib=16)).upload_chunk_size == 16 * MIB
    with pytest.raises(StorageError, match="upload_chunk_mib: must be between 1 and 1024"):
        GCSStorage("g", gcs_options(gcs_server, upload_chunk_mib=2048))


def test_it_holds_one_gcs_chunk_and_sends_it_without_a_copy(gcs_server: GCSServer) -> None:
    chunk = 8
    store = GCSStorage("g", gcs_options(gcs_server, upload_chunk_mib=chunk), prefix=f"bounded-{os.getpid()}")
    store.put_bytes("db/warm.bin", b"the client is built before the measure")
    writer = store.open_writer("db/bounded.bin")
    sha = hashlib.sha256()

    def upload() -> None:
        for data in fresh_chunks(3 * chunk + 3):  # three full chunks and a short last one
            sha.update(data)
            writer.write(data)
        writer.commit()

    peak = peak_while(upload)
    assert store.digest("db/bounded.bin") == ((3 * chunk + 3) * MIB, sha.hexdigest())
    store.delete("db/bounded.bin")
    store.delete("db/warm.bin")
    store.close()
    bound = chunk * MIB + 2 * MIB  # one chunk, one write beyond it, and the requests
    assert peak <= bound, f"{peak / MIB:.1f} MiB held at the peak, bound {bound / MIB:.1f} MiB"


def test_it_sends_a_gcs_chunk_as_views_of_the_writes_and_keeps_what_the_server_did_not(
    gcs_server: GCSServer,
) -> None:
    big = os.urandom(3 * MIB + 5)
    body = gcs_module._Pieces([b"abc", big], 3 + 2 * MIB)
    sent = [bytes(view) for view in body]
    assert len(body) == 3 + 2 * MIB
    assert sent == [b"abc", big[:MIB], big[MIB : 2 * MIB]]  # at most 1 MiB per socket send
    assert [bytes(view) for view in body] == sent  # sent again alike (a retry after a token refresh)
    # A server may persist less than a chunk (its 308 says how much): the rest is kept, no copy.
    writer = GCSStorage("g", gcs_options(gcs_server)).open_writer("db/partial.bin")
    writer.pieces, writer.buffered = [b"abc", big], 3 + len(big)  # type: ignore[attr-defined]
    writer._drop(3 + MIB)  # type: ignore[attr-defined]
    rest = writer.pieces  # type: ignore[attr-defined]
    assert len(rest) == 1 and isinstance(rest[0], memoryview) and rest[0].obj is big
    assert bytes(rest[0]) == big[MIB:] and writer.buffered == len(big) - MIB  # type: ignore[attr-defined]
    writer.abort()
