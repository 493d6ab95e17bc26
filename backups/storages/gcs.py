"""Google Cloud Storage: a bucket, written with resumable uploads, read with ranged GETs.

django-storages' ``GoogleCloudStorage`` builds the client and bucket and signs URLs; its file
objects spool whole files, so writes and reads stream through the SDK here instead.

Writer: a resumable upload session created with ``ifGenerationMatch=0`` (GCS refuses to create
the object if the name exists), fed one bounded chunk at a time; the object appears only when
the last chunk finalizes the session. Abort cancels the session (DELETE on its URL).

Chunks are large (``upload_chunk_mib``, 64 MiB by default; the SDK's own default is 100 MiB):
each request costs a round trip and, on gcp-storage-emulator, a copy of everything received so
far, so 8 MiB chunks made a 1 GiB upload six times slower than the SDK there. The caller's writes are
kept as they are and sent as the request body piece by piece (never joined into a copy), so a
writer holds one chunk plus one write, and each piece must go within ``timeout_seconds``.

Leftovers: an unfinished session holds no visible object, cannot be listed through any GCS API,
and expires at Google one week after it was created, so :meth:`GCSStorage.sweep_stale` has
nothing to remove and returns 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import google.auth
import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud.storage import Client  # type: ignore[import-untyped]  # ships no type hints
from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]
from google.oauth2 import service_account
from storages.backends.gcloud import GoogleCloudStorage

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
DEFAULT_UPLOAD_CHUNK_MIB = 64
SEND_PIECE = MIB  # the most one socket send carries: each must go within timeout_seconds
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]


class _Backend(GoogleCloudStorage):
    """django-storages' backend with a client that honours a custom API endpoint (emulators,
    private endpoints): its own ``client`` property passes none."""

    _client: Client | None

    def __init__(self, *, endpoint_url: str | None, **settings: Any) -> None:
        self.endpoint_url = endpoint_url
        super().__init__(**settings)

    @property
    def client(self) -> Client:
        if self._client is None:
            options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
            project = self.project_id or getattr(self.credentials, "project_id", None) or "<none>"
            self._client = Client(project=project, credentials=self.credentials, client_options=options)
        return self._client


class _Pieces:
    """The first ``length`` bytes of a writer's buffer as a request body: sized (so requests sends
    a Content-Length, not chunked encoding), iterated as memoryviews of at most SEND_PIECE bytes
    without copying, and iterable again (google-auth resends a body after refreshing a token)."""

    def __init__(self, pieces: list[bytes | memoryview], length: int) -> None:
        self.pieces, self.length = pieces, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[memoryview]:
        left = self.length
        for piece in self.pieces:
            view = memoryview(piece)[:left]
            for start in range(0, len(view), SEND_PIECE):
                yield view[start : start + SEND_PIECE]
            left -= len(view)
            if not left:
                return


class _GCSWriter(ObjectWriter):
    def __init__(self, storage: GCSStorage, path: str) -> None:
        self.storage, self.path = storage, path
        self.key = storage.key(path)
        self.where = storage.location(path)
        self.chunk = storage.upload_chunk_size
        self.pieces: list[bytes | memoryview] = []  # the caller's writes, not yet persisted
        self.buffered = 0
        self.offset = 0  # bytes the server has persisted
        self.session_url: str | None = None  # acts as a bearer token: never logged or shown
        self.finished = False

    def write(self, data: bytes) -> None:
        if self.finished:
            raise StorageError(f"{self.storage.name}: writer for {self.where} is already closed")
        if data:
            self.pieces.append(bytes(data))
            self.buffered += len(data)
        while self.buffered >= self.chunk:
            self._send(final=False)

    def commit(self) -> StoredObject:
        if self.finished:
            raise StorageError(f"{self.storage.name}: writer for {self.where} is already closed")
        resource = self._send(final=True)
        self.finished = True
        return StoredObject(
            path=self.path,
            size=int(resource.get("size", self.offset)),
            etag=str(resource.get("etag") or ""),
            version=str(resource.get("generation") or ""),
        )

    def abort(self) -> None:
        self.pieces, self.buffered = [], 0
        if self.finished:
            return
        self.finished = True
        if self.session_url is not None:
            # Cancelling frees the session at once (GCS answers 499); if this fails the session
            # still holds no visible object and expires within a week.
            with contextlib.suppress(Exception):
                self.storage.http.delete(self.session_url, timeout=self.storage.timeout)
            self.session_url = None

    def _drop(self, count: int) -> None:
        """Forget the first ``count`` buffered bytes (the server has them)."""
        self.buffered -= count
        while count:
            first = self.pieces[0]
            if len(first) > count:
                self.pieces[0] = memoryview(first)[count:]  # no copy: a view of the rest
                return
            count -= len(first)
            del self.pieces[0]

    def _start(self) -> str:
        storage = self.storage
        blob = storage.bucket.blob(self.key)
        # GCS enforces ifGenerationMatch=0 itself; this look first gives the same answer on
        # servers that ignore preconditions (emulators), before any byte is sent.
        if storage.call(
            lambda: blob.exists(timeout=storage.timeout, retry=storage.retry), "cannot check", self.where
        ):
            raise storage.exists_error(self.where)
        return cast(
            str,
            storage.call(
                lambda: blob.create_resumable_upload_session(
                    content_type="application/octet-stream",
                    if_generation_match=0,
                    timeout=storage.timeout,
                    checksum=None,
                    retry=storage.retry,
                ),
                "cannot start an upload to",
                self.where,
            ),
        )

    def _send(self, final: bool) -> dict[str, Any]:
        storage = self.storage
        if self.session_url is None:
            self.session_url = self._start()
        length = self.buffered if final else self.chunk
        total = str(self.offset + length) if final else "*"
        span = f"{self.offset}-{self.offset + length - 1}" if length else "*"
        try:
            response = storage.http.put(
                self.session_url,
                data=_Pieces(self.pieces, length) if length else b"",
                headers={"Content-Range": f"bytes {span}/{total}"},
                timeout=storage.timeout,
            )
        except Exception as exc:
            raise storage.error("upload failed for", self.where, exc) from None
        status = response.status_code
        if final and status in (200, 201):
            self.offset += length
            self.pieces, self.buffered = [], 0
            return cast(dict[str, Any], response.json())
        if not final and status == 308:
            # The server says how much it kept; keep the rest for the next request.
            kept = response.headers.get("Range", "")
            persisted = int(kept.rsplit("-", 1)[1]) + 1 if kept else 0
            if persisted < self.offset or persisted > self.offset + length:
                raise StorageError(
                    f"{storage.name}: upload of {self.where} lost its place (server kept {persisted} bytes)"
                )
            self._drop(persisted - self.offset)
            self.offset = persisted
            return {}
        if status == 412:
            raise storage.exists_error(self.where)
        raise storage.status_error("upload failed for", self.where, status)


class _GCSReader(ObjectReader):
    """The SDK's BlobReader (ranged GETs of one chunk each) with errors turned into StorageError."""

    def __init__(self, storage: GCSStorage, where: str, inner: BinaryIO) -> None:
        self.storage, self.where, self.inner = storage, where, inner

    def read(self, size: int = -1) -> bytes:
        try:
            return self.inner.read(size)
        except Exception as exc:
            raise self.storage.error("read failed for", self.where, exc) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.inner.close()
        super().close()


class GCSStorage(BackupStorage):
    """A Google Cloud Storage bucket (django-storages' GoogleCloudStorage underneath)."""

    kind = "gcs"
    can_sign_urls = True
    OPTIONS = {
        "bucket": Option(str, "the bucket that holds the backups", required=True),
        "project_id": Option(str, "the Google Cloud project (default: the credentials' project)"),
        "credentials_file": Option(
            str, "a service-account JSON key file (default: application default credentials)", path=True
        ),
        "anonymous": Option(bool, "send no credentials (emulators and public buckets)"),
        "endpoint_url": Option(str, "a custom API endpoint such as an emulator or a private endpoint"),
        "chunk_size_mib": Option(
            int,
            "download chunk size in MiB, and upload chunk size unless upload_chunk_mib is set (1-1024, default 8)",
        ),
        "upload_chunk_mib": Option(
            int,
            f"resumable upload chunk size in MiB (1-1024, default: chunk_size_mib if set, else {DEFAULT_UPLOAD_CHUNK_MIB});"
            " an upload holds one chunk",
        ),
        "timeout_seconds": Option(int, "timeout of one request, and of its retries (default 60)"),
    }

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        super().__init__(name, options, prefix)
        self.bucket_name: str = options["bucket"]
        self.endpoint_url: str | None = self.opt("endpoint_url")
        self.chunk_size = int(self.opt("chunk_size_mib", 8)) * MIB  # a multiple of 256 KiB
        # An explicit chunk_size_mib (e.g. small, for a slow link) kept meaning uploads too.
        upload_default = self.opt("chunk_size_mib", DEFAULT_UPLOAD_CHUNK_MIB)
        self.upload_chunk_size = int(self.opt("upload_chunk_mib", upload_default)) * MIB
        self.timeout = float(self.opt("timeout_seconds", 60))
        self.retry: Retry = DEFAULT_RETRY.with_timeout(self.timeout)
        self._backend: _Backend | None = None
        self._http: requests.Session | None = None

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for name in ("chunk_size_mib", "upload_chunk_mib"):
            if not 1 <= options.get(name, 8) <= 1024:
                problems.append((name, "must be between 1 and 1024"))
        if options.get("timeout_seconds", 60) < 1:
            problems.append(("timeout_seconds", "must be at least 1"))
        endpoint = options.get("endpoint_url")
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            problems.append(("endpoint_url", "must start with http:// or https://"))
        if options.get("anonymous") and options.get("credentials_file"):
            problems.append(("anonymous", "cannot be combined with credentials_file"))
        return problems

    # -- clients (built on first use: building a storage never connects) -------------------------

    @property
    def backend(self) -> _Backend:
        if self._backend is None:
            self._backend = _Backend(
                endpoint_url=self.endpoint_url,
                bucket_name=self.bucket_name,
                project_id=self.opt("project_id"),
                credentials=self._credentials(),
            )
        return self._backend

    def _credentials(self) -> Any:
        if self.opt("anonymous"):
            return AnonymousCredentials()
        path = self.opt("credentials_file")
        if path is None:
            try:
                credentials, _ = google.auth.default(scopes=SCOPES)
            except google.auth.exceptions.DefaultCredentialsError:
                raise StorageError(
                    f"{self.name}: no Google credentials found; set credentials_file or configure application default credentials"
                ) from None
            return credentials
        try:
            return service_account.Credentials.from_service_account_file(path, scopes=SCOPES)
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot read credentials_file {path}: {exc.strerror}") from None
        except (ValueError, KeyError):
            # The parser's message may quote the file's contents, which hold the private key.
            raise StorageError(
                f"{self.name}: credentials_file {path} is not a service-account JSON key"
            ) from None

    @property
    def bucket(self) -> Any:  # google.cloud.storage.Bucket, which ships no type hints
        return self.backend.bucket

    @property
    def http(self) -> requests.Session:
        """The session for upload-session requests (authorized like the client's)."""
        if self._http is None:
            credentials = self.backend.credentials
            if isinstance(credentials, AnonymousCredentials):
                self._http = requests.Session()
            else:
                self._http = AuthorizedSession(credentials)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._backend is not None and self._backend._client is not None:
            with contextlib.suppress(Exception):
                self._backend._client.close()
        self._backend, self._http = None, None

    # -- errors ---------------------------------------------------------------------------------

    def exists_error(self, where: str) -> StorageError:
        return StorageError(f"{self.name}: {where} already exists; not overwriting it")

    def status_error(self, action: str, where: str, status: int) -> StorageError:
        if status in (401, 403):
            reason = f"access denied (HTTP {status}); check the credentials and their permissions"
        elif status == 404:
            reason = f"bucket {self.bucket_name} does not exist, or the upload session expired"
        elif status in (410, 499):
            reason = "the upload session was cancelled or expired"
        else:
            reason = f"HTTP {status}"
        return StorageError(f"{self.name}: {action} {where}: {reason}")

    def error(self, action: str, where: str, exc: BaseException) -> StorageError:
        """A plain sentence for ``exc``; never its text, which may quote tokens or keys."""
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, gexc.RetryError) and exc.cause is not None:
            exc = exc.cause
        endpoint = self.endpoint_url or "https://storage.googleapis.com"
        if isinstance(exc, google.auth.exceptions.RefreshError):
            reason = "the credentials were refused (check credentials_file)"
        elif isinstance(exc, requests.RequestException | google.auth.exceptions.TransportError):
            reason = _connection_failure(endpoint, exc, self.timeout)
        elif isinstance(exc, gexc.GoogleAPICallError) and exc.code is not None:
            return self.status_error(action, where, int(exc.code))
        elif isinstance(exc, AttributeError) and "private key" in str(exc):
            reason = "signing URLs needs credentials_file with a service-account key"
        else:
            reason = type(exc).__name__
        return StorageError(f"{self.name}: {action} {where}: {reason}")

    def call(self, operation: Any, action: str, where: str) -> Any:
        try:
            return operation()
        except Exception as exc:
            raise self.error(action, where, exc) from None

    # -- the contract ---------------------------------------------------------------------------

    def open_writer(self, path: str) -> ObjectWriter:
        return _GCSWriter(self, path)

    def open_reader(self, path: str) -> BinaryIO:
        where = self.location(path)
        blob = self.call(
            lambda: self.bucket.get_blob(self.key(path), timeout=self.timeout, retry=self.retry),
            "cannot read",
            where,
        )
        if blob is None:
            raise StorageError(f"{self.name}: {where} does not exist")
        # Pinned to the generation just seen, so a replaced object is never read half old, half new.
        inner = blob.open(
            "rb",
            chunk_size=self.chunk_size,
            if_generation_match=blob.generation,
            timeout=self.timeout,
            retry=self.retry,
        )
        return cast(BinaryIO, _GCSReader(self, where, inner))

    def exists(self, path: str) -> bool:
        blob = self.bucket.blob(self.key(path))
        return bool(
            self.call(
                lambda: blob.exists(timeout=self.timeout, retry=self.retry),
                "cannot check",
                self.location(path),
            )
        )

    def size(self, path: str) -> int:
        where = self.location(path)
        blob = self.call(
            lambda: self.bucket.get_blob(self.key(path), timeout=self.timeout, retry=self.retry),
            "cannot stat",
            where,
        )
        if blob is None:
            raise StorageError(f"{self.name}: {where} does not exist")
        return int(blob.size or 0)

    def delete(self, path: str) -> None:
        blob = self.bucket.blob(self.key(path))
        self.call(
            lambda: _delete_if_there(blob, self.retry, self.timeout), "cannot delete", self.location(path)
        )

    def check_writable(self) -> None:
        probe = self.bucket.blob(self.key(probe_name()))
        where = f"gs://{self.bucket_name}"
        self.call(
            lambda: probe.upload_from_string(
                b"ok", if_generation_match=0, timeout=self.timeout, retry=self.retry
            ),
            "cannot write to",
            where,
        )
        self.call(
            lambda: _delete_if_there(probe, self.retry, self.timeout), "cannot delete a test object in", where
        )

    def sweep_partials(self, path: str) -> int:
        return 0  # an unfinished resumable session is not an object (see the module docstring)

    def sweep_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        """Nothing to sweep: unfinished resumable sessions are invisible, cannot be listed and
        expire at Google a week after they were created."""
        return 0

    def list_objects(self) -> Iterator[StoredObject]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        where = f"gs://{self.bucket_name}/{prefix}"
        blobs = self.call(
            lambda: iter(self.bucket.list_blobs(prefix=prefix, timeout=self.timeout, retry=self.retry)),
            "cannot list",
            where,
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
                etag=blob.etag or "",
                version=str(blob.generation or ""),
                modified=blob.updated,
            )

    def location(self, path: str) -> str:
        return f"gs://{self.bucket_name}/{self.key(path)}"

    def signed_url(self, path: str, expires_seconds: int) -> str:
        """A V4 signed GET URL; needs credentials with a private key (credentials_file)."""
        params: dict[str, Any] = {"expiration": timedelta(seconds=expires_seconds), "method": "GET"}
        if self.endpoint_url:
            params["api_access_endpoint"] = self.endpoint_url
        key = self.key(path)
        url = self.call(
            lambda: self.backend.url(key, parameters=params), "cannot sign a URL for", self.location(path)
        )
        return cast(str, url)


def _connection_failure(endpoint: str, exc: BaseException, timeout: float) -> str:
    # The exception's text is only looked at, never shown (it may carry URLs with tokens).
    if any(word in str(exc) for word in ("NewConnectionError", "Failed to establish", "Connection refused")):
        return f"cannot connect to {endpoint}; is it up and reachable?"
    if isinstance(exc, requests.ConnectTimeout):
        return f"cannot connect to {endpoint}: no answer within {timeout:g} s"
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc):  # also a send that timed out
        return f"{endpoint} timed out: no answer within {timeout:g} s (timeout_seconds)"
    return f"the connection to {endpoint} failed ({type(exc).__name__})"


def _delete_if_there(blob: Any, retry: Retry, timeout: float) -> None:
    with contextlib.suppress(gexc.NotFound):
        blob.delete(timeout=timeout, retry=retry)
