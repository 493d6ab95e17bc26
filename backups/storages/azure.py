"""Azure Blob Storage: a container, written as staged blocks committed at once.

django-storages' ``AzureStorage`` holds the settings, builds the service and container clients
and signs SAS URLs; its file objects spool whole files, so writes and reads stream through the
SDK here instead.

Writer: each bounded block is staged with a unique id (uncommitted blocks are invisible), up to
``upload_concurrency`` at once, then ``commit_block_list`` with ``If-None-Match: *`` makes the
blob appear whole, and fails if the name exists, so nothing is ever overwritten. A block is
assembled only once a slot is free, so a writer holds at most (concurrency + 1) blocks. Until then the name is an "uncommitted blob": only a
listing with ``include=uncommittedblobs`` shows it. Abort deletes it; :meth:`sweep_stale` deletes
those a dead writer left (Azure would also collect them a week after the last staged block).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import quote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContainerClient, LinearRetry
from storages.backends.azure_storage import AzureStorage as DjangoAzureStorage

from backups.plugins import Option

from .base import (
    STALE_AFTER,
    BackupStorage,
    ObjectReader,
    ObjectWriter,
    StorageError,
    StoredObject,
    is_probe,
    probe_name,
)

MIB = 1024 * 1024
MAX_BLOCKS = 50_000  # Azure's limit of committed blocks per blob
MAX_BLOCK = 4000 * MIB  # Azure's largest block
# Blocks staged at once by default. On Azurite (bench/storagebench.py) 2 took a 256 MiB upload
# from 1.3-1.5x the SDK's upload_blob to 0.7-1.0x; 4 was no faster.
DEFAULT_CONCURRENCY = 2
MAX_CONCURRENCY = 10  # the SDK's HTTP session keeps 10 connections per host
T = TypeVar("T")
CONTAINER_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
SECRETS = ("account_key", "sas_token", "connection_string")


class _Backend(DjangoAzureStorage):
    """django-storages' backend with a custom blob endpoint (Azurite, private endpoints) and client
    options for connection strings too: its own client builder honours neither."""

    def __init__(self, *, endpoint_url: str | None, **settings: Any) -> None:
        self.endpoint_url = endpoint_url
        super().__init__(**settings)

    def _get_service_client(self) -> BlobServiceClient:
        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **self.client_options)
        if not self.endpoint_url:
            return cast(BlobServiceClient, super()._get_service_client())
        credential: Any = self.sas_token
        if self.account_key:
            credential = {"account_name": self.account_name, "account_key": self.account_key}
        return BlobServiceClient(self.endpoint_url, credential=credential, **self.client_options)


class _AzureWriter(ObjectWriter):
    def __init__(self, storage: AzureStorage, path: str) -> None:
        self.storage, self.path = storage, path
        self.where = storage.location(path)
        self.blob: BlobClient = storage.container.get_blob_client(storage.key(path))
        self.token = uuid.uuid4().hex  # block ids unique to this writer (same length for all)
        self.blocks: list[str] = []  # in the blob's order, staged or in flight
        self.chunks: list[bytes] = []  # the caller's writes, joined once per block
        self.buffered = 0
        self.pending: set[Future[None]] = set()
        self.pool: ThreadPoolExecutor | None = None  # started with the first block
        self.size = 0
        self.finished = False

    def write(self, data: bytes) -> None:
        if self.finished:
            raise StorageError(f"{self.storage.name}: writer for {self.where} is already closed")
        self.chunks.append(bytes(data))
        self.buffered += len(data)
        self.size += len(data)
        # A block may exceed block_size by less than one write: Azure takes any size up to 4000 MiB.
        if self.buffered >= self.storage.block_size:
            self._failing_aborts(self._stage_buffered)

    def _failing_aborts(self, step: Callable[[], T]) -> T:
        """Run ``step``; a failure aborts the whole upload (no block stays behind) and is raised."""
        try:
            return step()
        except StorageError:
            self.abort()
            raise

    def _stage_buffered(self) -> None:
        """Stage what is buffered as the next block, once a slot is free."""
        if len(self.blocks) >= MAX_BLOCKS:
            raise StorageError(
                f"{self.storage.name}: {self.where} would exceed {MAX_BLOCKS} blocks; raise block_size_mib"
            )
        # Wait before joining: the chunks and their joined copy briefly coexist.
        while len(self.pending) >= self.storage.concurrency:
            self._collect(FIRST_COMPLETED)
        block = b"".join(self.chunks)
        self.chunks, self.buffered = [], 0
        if len(block) > MAX_BLOCK:
            raise StorageError(
                f"{self.storage.name}: a block of {self.where} would exceed Azure's 4000 MiB; lower block_size_mib"
            )
        block_id = f"{self.token}-{len(self.blocks):06d}"
        self.blocks.append(block_id)
        if len(self.blocks) == 1:
            # The first block goes from the writer's own thread: a storage that cannot be reached
            # fails the first write, and once it returned a writer that dies leaves an uncommitted
            # blob for a sweep to find (as S3's upload, created when the writer opens).
            self._stage(block_id, block)
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.storage.concurrency, thread_name_prefix="azure-block")
        self.pending.add(self.pool.submit(self._stage, block_id, block))

    def _stage(self, block_id: str, block: bytes) -> None:
        self.storage.call(
            lambda: self.blob.stage_block(block_id, block, length=len(block)), "upload failed for", self.where
        )

    def _collect(self, until: str = ALL_COMPLETED) -> None:
        done, self.pending = wait(self.pending, return_when=until)
        for future in done:
            future.result()  # re-raises the block's StorageError

    def commit(self) -> StoredObject:
        if self.finished:
            raise StorageError(f"{self.storage.name}: writer for {self.where} is already closed")

        def finish() -> dict[str, Any]:
            if self.chunks:
                self._stage_buffered()
            self._collect()
            return cast(
                dict[str, Any],
                self.storage.call(
                    lambda: self.blob.commit_block_list(
                        [BlobBlock(block_id) for block_id in self.blocks],
                        match_condition=MatchConditions.IfMissing,
                    ),
                    "cannot commit",
                    self.where,
                ),
            )

        result = self._failing_aborts(finish)
        self.finished = True
        self._stop_pool()
        return StoredObject(path=self.path, size=self.size, etag=str(result.get("etag") or "").strip('"'))

    def _stop_pool(self) -> None:
        for future in self.pending:
            future.cancel()
        wait(self.pending)  # blocks already on the wire finish (or fail) first
        self.pending = set()
        if self.pool is not None:
            self.pool.shutdown()

    def abort(self) -> None:
        self.chunks, self.buffered = [], 0
        if self.finished:
            return
        self.finished = True
        # No block may land after the delete below (it would make an uncommitted blob again).
        self._stop_pool()
        if self.blocks:
            # Best effort: if this fails the blocks stay invisible and sweep_stale or Azure's own
            # collection (a week after the last staged block) removes them.
            with contextlib.suppress(Exception):
                self.storage.delete_uncommitted(self.blob)


class _AzureReader(ObjectReader):
    """A blob's bytes from the SDK's downloader, one bounded chunk (4 MiB) at a time."""

    def __init__(self, storage: AzureStorage, where: str, chunks: Iterator[bytes]) -> None:
        self.storage, self.where, self.chunks = storage, where, chunks
        self.pending = b""

    def read(self, size: int = -1) -> bytes:
        parts = [self.pending]
        have = len(self.pending)
        while size < 0 or have < size:
            chunk = self.storage.call(lambda: next(self.chunks, b""), "read failed for", self.where)
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size < 0:
            self.pending = b""
            return data
        self.pending = data[size:]
        return data[:size]

    def close(self) -> None:
        self.chunks = iter(())
        self.pending = b""
        super().close()


class AzureStorage(BackupStorage):
    """An Azure Blob Storage container (django-storages' AzureStorage underneath)."""

    kind = "azure"
    can_sign_urls = True
    OPTIONS = {
        "account_name": Option(str, "the storage account (not needed with connection_string)"),
        "account_key": Option(str, "the storage account's access key", secret=True),
        "sas_token": Option(str, "a SAS token with read, write, delete and list rights", secret=True),
        "connection_string": Option(str, "a storage account connection string", secret=True),
        "container": Option(str, "the container that holds the backups", required=True),
        "endpoint_url": Option(
            str, "a custom blob endpoint, such as Azurite's http://127.0.0.1:10000/ACCOUNT"
        ),
        "block_size_mib": Option(
            int,
            "size of each uploaded block in MiB (1-4000, default 8); an upload holds (upload_concurrency + 1) blocks",
        ),
        "upload_concurrency": Option(
            int,
            f"blocks staged at once (1-{MAX_CONCURRENCY}, default {DEFAULT_CONCURRENCY}); each adds one block of memory per upload",
        ),
        "timeout_seconds": Option(int, "connect and read timeout of one request (default 60)"),
        "retries": Option(int, "how often a failed request is retried, 2 s apart (default 3)"),
    }

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        super().__init__(name, options, prefix)
        self.container_name: str = options["container"]
        self.block_size = int(self.opt("block_size_mib", 8)) * MIB
        self.concurrency = int(self.opt("upload_concurrency", DEFAULT_CONCURRENCY))
        self.timeout = int(self.opt("timeout_seconds", 60))
        self.base_url = self._base_url()
        self._backend: _Backend | None = None

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        given = [key for key in SECRETS if options.get(key)]
        if not given:
            problems.append(("account_key", "one of account_key, sas_token or connection_string is required"))
        elif len(given) > 1:
            problems.append((given[1], f"set only one of {', '.join(given)}"))
        if not options.get("account_name") and not options.get("connection_string"):
            problems.append(("account_name", "required unless connection_string is set"))
        if not CONTAINER_NAME.match(options["container"]):
            problems.append(("container", "must be 3-63 lowercase letters, digits and single hyphens"))
        if not 1 <= options.get("block_size_mib", 8) <= 4000:
            problems.append(("block_size_mib", "must be between 1 and 4000"))
        if not 1 <= options.get("upload_concurrency", DEFAULT_CONCURRENCY) <= MAX_CONCURRENCY:
            problems.append(("upload_concurrency", f"must be between 1 and {MAX_CONCURRENCY}"))
        if options.get("timeout_seconds", 60) < 1:
            problems.append(("timeout_seconds", "must be at least 1"))
        if not 0 <= options.get("retries", 3) <= 10:
            problems.append(("retries", "must be between 0 and 10"))
        endpoint = options.get("endpoint_url")
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            problems.append(("endpoint_url", "must start with http:// or https://"))
        return problems

    def _base_url(self) -> str:
        """The blob endpoint, for messages and locations: never a key or SAS."""
        if self.opt("endpoint_url"):
            return str(self.opt("endpoint_url")).rstrip("/")
        parts: dict[str, str] = {}
        for item in str(self.opt("connection_string", "")).split(";"):
            key, _, value = item.partition("=")
            parts[key.strip().lower()] = value.strip()
        if parts.get("blobendpoint"):
            return urlsplit(parts["blobendpoint"])._replace(query="", fragment="").geturl().rstrip("/")
        account = self.opt("account_name") or parts.get("accountname", "")
        protocol = parts.get("defaultendpointsprotocol", "https")
        return f"{protocol}://{account}.blob.{parts.get('endpointsuffix', 'core.windows.net')}"

    # -- clients (built on first use: building a storage never connects) -------------------------

    @property
    def backend(self) -> _Backend:
        if self._backend is None:
            self._backend = _Backend(
                endpoint_url=self.opt("endpoint_url"),
                account_name=self.opt("account_name"),
                account_key=self.opt("account_key"),
                sas_token=self.opt("sas_token"),
                connection_string=self.opt("connection_string"),
                azure_container=self.container_name,
                client_options={
                    # The SDK's default waits 15 s and more between tries; a backup would rather
                    # fail in seconds and be retried as a whole.
                    "retry_policy": LinearRetry(
                        backoff=2, random_jitter_range=1, retry_total=self.opt("retries", 3)
                    ),
                    "connection_timeout": self.timeout,
                    "read_timeout": self.timeout,
                    # Downloads come in 4 MiB pieces (the first GET would otherwise be 32 MiB).
                    "max_single_get_size": 4 * MIB,
                    "max_chunk_get_size": 4 * MIB,
                },
            )
        return self._backend

    @property
    def container(self) -> ContainerClient:
        return cast(ContainerClient, self.backend.client)

    def close(self) -> None:
        if self._backend is not None and self._backend._service_client is not None:
            with contextlib.suppress(Exception):
                self._backend._service_client.close()
        self._backend = None

    # -- errors ---------------------------------------------------------------------------------

    def exists_error(self, where: str) -> StorageError:
        return StorageError(f"{self.name}: {where} already exists; not overwriting it")

    def error(self, action: str, where: str, exc: BaseException) -> StorageError:
        """A plain sentence for ``exc``; never its text, which may quote signatures or tokens."""
        if isinstance(exc, StorageError):
            return exc
        code = getattr(exc, "error_code", None) or ""
        code = str(getattr(code, "value", code))  # the SDK's StorageErrorCode enum, or a plain str
        status = getattr(exc, "status_code", None)
        if (
            isinstance(exc, ResourceExistsError)
            or status == 412
            or code in ("BlobAlreadyExists", "ConditionNotMet")
        ):
            return self.exists_error(where)
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            detail = f" (HTTP {status} {code})" if status else ""
            reason = f"authentication failed{detail}; check account_key, sas_token or connection_string"
        elif code == "ContainerNotFound":
            reason = f"container {self.container_name} does not exist"
        elif isinstance(exc, ResourceNotFoundError):
            return StorageError(f"{self.name}: {where} does not exist")
        elif isinstance(exc, ServiceRequestError | ServiceResponseError):
            # The exception's text is only looked at, never shown.
            if any(word in str(exc) for word in ("NewConnectionError", "Failed to establish", "refused")):
                reason = f"cannot connect to {self.base_url}; is it up and reachable?"
            elif isinstance(exc, ServiceRequestTimeoutError):
                reason = f"cannot connect to {self.base_url}: no answer within {self.timeout} s"
            elif "timed out" in str(exc) or "Timeout" in type(exc).__name__:  # a send or a read
                reason = f"{self.base_url} timed out: no answer within {self.timeout} s (timeout_seconds)"
            else:
                reason = f"the connection to {self.base_url} failed ({type(exc).__name__})"
        elif isinstance(exc, HttpResponseError):
            reason = f"HTTP {status} {code}".strip()
        else:
            reason = type(exc).__name__  # AzureError and others: their text may quote a request
        return StorageError(f"{self.name}: {action} {where}: {reason}")

    def call(self, operation: Any, action: str, where: str) -> Any:
        try:
            return operation()
        except Exception as exc:
            raise self.error(action, where, exc) from None

    def delete_uncommitted(self, blob: BlobClient) -> bool:
        """Delete a blob that has only uncommitted blocks; never one that has been committed."""
        try:
            blob.get_blob_properties()
            return False  # committed (by someone): its stray blocks go at its next commit
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                return False
        try:
            blob.delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    # -- the contract ---------------------------------------------------------------------------

    def open_writer(self, path: str) -> ObjectWriter:
        return _AzureWriter(self, path)

    def open_reader(self, path: str) -> BinaryIO:
        where = self.location(path)
        blob = self.container.get_blob_client(self.key(path))
        downloader = self.call(lambda: blob.download_blob(max_concurrency=1), "cannot read", where)
        return cast(BinaryIO, _AzureReader(self, where, iter(downloader.chunks())))

    def exists(self, path: str) -> bool:
        blob = self.container.get_blob_client(self.key(path))
        return bool(self.call(blob.exists, "cannot check", self.location(path)))

    def size(self, path: str) -> int:
        blob = self.container.get_blob_client(self.key(path))
        return int(self.call(blob.get_blob_properties, "cannot stat", self.location(path)).size)

    def delete(self, path: str) -> None:
        blob = self.container.get_blob_client(self.key(path))
        try:
            blob.delete_blob(delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise self.error("cannot delete", self.location(path), exc) from None
        except Exception as exc:
            raise self.error("cannot delete", self.location(path), exc) from None

    def check_writable(self) -> None:
        probe = self.container.get_blob_client(self.key(probe_name()))
        where = f"{self.base_url}/{self.container_name}"
        self.call(lambda: probe.upload_blob(b"ok", overwrite=False), "cannot write to", where)
        self.call(probe.delete_blob, "cannot delete a test object in", where)

    def sweep_partials(self, path: str) -> int:
        blob = self.container.get_blob_client(self.key(path))
        return int(self.call(lambda: self.delete_uncommitted(blob), "cannot sweep", self.location(path)))

    def sweep_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        """Delete uncommitted blobs (a dead writer's staged blocks) last touched before the cutoff."""
        prefix = f"{self.prefix}/" if self.prefix else None
        where = f"{self.base_url}/{self.container_name}/{prefix or ''}"
        cutoff = datetime.now(UTC) - older_than

        def candidates() -> list[str]:
            committed = {blob.name for blob in self.container.list_blobs(name_starts_with=prefix)}
            return [
                blob.name
                for blob in self.container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])
                if blob.name not in committed
                and blob.last_modified is not None
                and blob.last_modified <= cutoff
            ]

        removed = 0
        for name in self.call(candidates, "cannot list", where):
            blob = self.container.get_blob_client(name)
            removed += int(self.call(lambda b=blob: self.delete_uncommitted(b), "cannot sweep", where))
        return removed

    def list_objects(self) -> Iterator[StoredObject]:
        prefix = f"{self.prefix}/" if self.prefix else None
        where = f"{self.base_url}/{self.container_name}/{prefix or ''}"
        blobs = self.call(
            lambda: iter(self.container.list_blobs(name_starts_with=prefix)), "cannot list", where
        )
        while True:
            blob = self.call(lambda: next(blobs, None), "cannot list", where)
            if blob is None:
                return
            relative = self.relative(blob.name)
            if is_probe(relative.rsplit("/", 1)[-1]):
                continue
            yield StoredObject(
                path=relative,
                size=int(blob.size or 0),
                etag=str(blob.etag or "").strip('"'),
                version=str(getattr(blob, "version_id", None) or ""),
                modified=blob.last_modified,
            )

    def location(self, path: str) -> str:
        return f"{self.base_url}/{self.container_name}/{quote(self.key(path), safe='/~')}"

    def signed_url(self, path: str, expires_seconds: int) -> str:
        """A read-only SAS URL valid for ``expires_seconds``; needs the account key to sign."""
        backend = self.backend
        if not backend.account_key:
            raise StorageError(
                f"{self.name}: signing a URL for {self.location(path)} needs account_key (or a connection_string with one)"
            )
        key = self.key(path)
        url = self.call(
            lambda: backend.url(key, expire=expires_seconds, mode="r"),
            "cannot sign a URL for",
            self.location(path),
        )
        return cast(str, url)
