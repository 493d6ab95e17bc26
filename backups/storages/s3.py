"""S3 storage: a bucket (and prefix) on AWS S3 or any S3-compatible endpoint, through boto3.

django-storages builds the configured boto3 client (credentials, region, endpoint, TLS); its
``S3File`` buffers whole files and cannot abort cleanly, so the streaming is done here: a writer
is one multipart upload fed from a bounded buffer, completed on commit with ``If-None-Match: *``
(never overwrite) and aborted on any failure, so no part lingers and no object appears.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import urllib3
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from storages.backends.s3 import S3Storage as DjangoS3Storage

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

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CONNECT_TIMEOUT = 10  # seconds to open a connection (at most timeout_seconds)
MAX_PART, MAX_PARTS = 5 * 1024 * MIB, 10_000  # S3's multipart limits (and 5 MiB minimum)
GROWTH_EVERY = 1000  # the part size doubles every 1000 parts: 8 MiB parts reach ~8 TiB
# Parts in flight per upload by default. On loopback moto (bench/storagebench.py, 2 loaded cores)
# 4 took a 256 MiB upload from 1.4-2x boto3's upload_fileobj (10 threads) to 0.9-1.2x; 8 was not
# clearly faster and holds 9 parts instead of 5 (40 MiB at the default part size) per copy.
DEFAULT_CONCURRENCY = 4
_MISSING = {"NoSuchKey", "404", "NotFound"}
_PLAIN = {
    "NoSuchBucket": "the bucket does not exist",
    "PreconditionFailed": "it already exists; not overwriting it",  # If-None-Match: *
    "ConditionalRequestConflict": "it already exists; not overwriting it",
    "InvalidAccessKeyId": "the server does not know this access key (check access_key)",
    "SignatureDoesNotMatch": "the server rejected the request signature (check secret_key)",
    "AccessDenied": "access denied (check access_key, secret_key and their rights on the bucket)",
    "403": "access denied (check access_key, secret_key and their rights on the bucket)",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "InvalidObjectState": "the object is archived (its storage class) and must be restored first",
    "KMS.NotFoundException": "the KMS key was not found (check sse_kms_key_id)",
}


def _timed_out_sending(exc: BaseException) -> bool:
    """A request whose bytes the endpoint stopped taking: urllib3 reports the socket's timeout
    while sending as a lost connection (ProtocolError("Connection aborted.", TimeoutError))."""
    cause = getattr(exc, "kwargs", {}).get("error") if isinstance(exc, ConnectionClosedError) else None
    return isinstance(cause, urllib3.exceptions.ProtocolError) and any(
        isinstance(arg, TimeoutError) for arg in cause.args
    )


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, ReadTimeoutError | ConnectTimeoutError) or _timed_out_sending(exc)


def _code(exc: BaseException) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


class _S3Writer(ObjectWriter):
    """One multipart upload. Up to ``upload_concurrency`` parts are in flight at once (as boto3's
    own transfer manager does), and a part is assembled only once a slot is free, so at most
    (concurrency + 1) parts are held: the ones on the wire and the one being filled."""

    def __init__(self, storage: S3Storage, path: str) -> None:
        self.storage, self.path, self.key = storage, path, storage.key(path)
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.parts: dict[int, str] = {}  # part number -> ETag, of the parts that are done
        self.numbered = 0
        self.pending: set[Future[tuple[int, str]]] = set()
        self.pool = ThreadPoolExecutor(max_workers=storage.concurrency, thread_name_prefix="s3-part")
        self.size = 0
        self.stored: StoredObject | None = None
        self.closed = False
        self.lock = storage.lock_settings()
        args = storage.object_args(self.lock)
        response = storage.call("cannot start an upload to", path, "create_multipart_upload", **args)
        self.upload_id: str | None = response["UploadId"]

    def part_size(self) -> int:
        # Parts grow as their number grows, so an object far beyond 10,000 x part_size still fits.
        return min(MAX_PART, self.storage.part_size << (self.numbered // GROWTH_EVERY))

    def write(self, data: bytes) -> None:
        if self.closed:
            raise StorageError(f"{self.storage.name}: the upload of {self.path} is already closed")
        # The caller's chunks are kept as they are and joined once per part (one copy): a part
        # may be a little larger than part_size, which S3 allows (only the last may be smaller).
        self.chunks.append(bytes(data))
        self.buffered += len(data)
        self.size += len(data)
        if self.buffered >= self.part_size():
            try:
                self.submit_buffered()
            except StorageError:
                self.abort()
                raise

    def submit_buffered(self) -> None:
        """Start uploading what is buffered as the next part, once a slot is free."""
        # Wait before joining: the chunks and their joined copy briefly coexist, and with a full
        # set of parts in flight that would be (concurrency + 2) parts.
        while len(self.pending) >= self.storage.concurrency:
            self.collect(FIRST_COMPLETED)
        part = b"".join(self.chunks)
        self.chunks, self.buffered = [], 0
        self.numbered += 1
        if self.numbered > MAX_PARTS:
            raise StorageError(f"{self.storage.name}: {self.path} exceeds S3's {MAX_PARTS} parts")
        self.pending.add(self.pool.submit(self.upload, self.numbered, part))

    def collect(self, until: str = ALL_COMPLETED) -> None:
        done, self.pending = wait(self.pending, return_when=until)
        for future in done:
            number, etag = future.result()  # re-raises the part's StorageError
            self.parts[number] = etag

    def upload(self, number: int, chunk: bytes) -> tuple[int, str]:
        response = self.storage.call(
            "upload failed for", self.path, "upload_part", UploadId=self.upload_id, PartNumber=number, Body=chunk,
        )  # fmt: skip
        return number, response["ETag"]

    def commit(self) -> StoredObject:
        if self.stored is not None:
            return self.stored
        if self.closed:
            raise StorageError(f"{self.storage.name}: the upload of {self.path} was aborted")
        try:
            if self.chunks or not self.numbered:
                self.submit_buffered()
            self.collect()
            self.pool.shutdown()
            # Servers that ignore If-None-Match would overwrite silently, so look first as well
            # (that check alone is not race-free; the conditional complete below is).
            if self.storage.exists(self.path):
                raise self.storage.already_exists(self.path)
            parts = {"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in sorted(self.parts.items())]}
            response = self.storage.call(
                "cannot complete the upload of", self.path, "complete_multipart_upload",
                UploadId=self.upload_id, MultipartUpload=parts, IfNoneMatch="*",
            )  # fmt: skip
        except StorageError:
            self.abort()
            raise
        self.upload_id, self.closed = None, True
        version = response.get("VersionId", "")
        if self.lock:
            self.storage.ensure_retention(self.path, version, self.lock)
        self.stored = StoredObject(
            path=self.path, size=self.size, etag=response.get("ETag", "").strip('"'), version=version
        )
        return self.stored

    def abort(self) -> None:
        self.closed, self.chunks, self.buffered = True, [], 0
        for future in self.pending:
            future.cancel()
        wait(self.pending)  # parts already on the wire finish (or fail) before the abort
        self.pending = set()
        self.pool.shutdown()
        if self.upload_id is None:
            return
        try:
            self.storage.client().abort_multipart_upload(
                Bucket=self.storage.bucket, Key=self.key, UploadId=self.upload_id
            )
        except (BotoCoreError, ClientError) as exc:
            if _code(exc) != "NoSuchUpload":  # already gone is fine
                error = self.storage.error("cannot abort the upload of", self.path, exc)
                log.warning("%s; a later sweep removes its parts", error)
                if not _timed_out(exc):
                    return  # the upload id is kept: a later abort() retries once the link is back
                # An endpoint that stalled is not asked again by this writer (each try would wait
                # as long): sweep_partials() or sweep_stale() removes the upload.
        self.upload_id = None


class _S3Reader(ObjectReader):
    """The streaming body of a GET; errors mid-stream become StorageError."""

    def __init__(self, storage: S3Storage, path: str, body: Any) -> None:
        self.storage, self.path, self.body = storage, path, body

    def read(self, size: int | None = -1) -> bytes:
        try:
            data: bytes = self.body.read(None if size is None or size < 0 else size)
        except (BotoCoreError, OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
            raise self.storage.error("read failed for", self.path, exc) from None
        return data

    def close(self) -> None:
        if not self.closed:
            self.body.close()
        super().close()


class S3Storage(BackupStorage):
    """A bucket on S3 or any S3-compatible endpoint (MinIO, Ceph, R2, B2, Wasabi...)."""

    kind = "s3"
    can_sign_urls = True
    OPTIONS = {
        "bucket": Option(str, "the bucket that holds the backups", required=True),
        "region": Option(str, "the bucket's region, e.g. eu-central-1 (default: boto3's)"),
        "endpoint_url": Option(str, "an S3-compatible endpoint, e.g. https://s3.example.net"),
        "access_key": Option(str, "the access key id (default: boto3's credential chain)", secret=True),
        "secret_key": Option(str, "the secret access key", secret=True),
        "session_token": Option(str, "a session token for temporary credentials", secret=True),
        "storage_class": Option(str, "e.g. STANDARD_IA; archive classes cannot be read back directly"),
        "server_side_encryption": Option(str, "server-side encryption", choices=("AES256", "aws:kms")),
        "sse_kms_key_id": Option(str, "the KMS key for server_side_encryption = aws:kms"),
        "object_lock_mode": Option(str, "Object Lock retention mode", choices=("GOVERNANCE", "COMPLIANCE")),
        "object_lock_days": Option(int, "days each object is locked (with object_lock_mode)"),
        "part_size_mib": Option(
            int,
            "multipart part size in MiB (min 5, default 8); an upload holds (upload_concurrency + 1) parts",
        ),
        "upload_concurrency": Option(
            int,
            f"parts uploaded at once (1-16, default {DEFAULT_CONCURRENCY}); each adds one part of memory per upload",
        ),
        "addressing_style": Option(str, "bucket addressing", choices=("auto", "path", "virtual")),
        "ca_bundle": Option(str, "a CA bundle to verify the endpoint's certificate", path=True),
        "verify_tls": Option(bool, "verify the endpoint's TLS certificate (default true)"),
        "timeout_seconds": Option(
            int, "seconds a request may wait for the endpoint to take or answer bytes (default 120)"
        ),
    }

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        super().__init__(name, options, prefix)
        self.bucket: str = options["bucket"]
        self.part_size = self.opt("part_size_mib", 8) * MIB
        self.concurrency: int = self.opt("upload_concurrency", DEFAULT_CONCURRENCY)
        self.timeout: int = self.opt("timeout_seconds", 120)
        # Also the limit on each block of a request's body sent (urllib3 sends with this timeout).
        self.connect_timeout = min(CONNECT_TIMEOUT, self.timeout)
        self._backend: DjangoS3Storage | None = None  # built on first use: no connection here
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._secrets = [
            self.options[k] for k in ("access_key", "secret_key", "session_token") if self.opt(k)
        ]

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        has = {key for key, value in options.items() if value not in (None, "")}
        if "object_lock_mode" in has and "object_lock_days" not in has:
            problems.append(("object_lock_days", "required when object_lock_mode is set"))
        if "object_lock_days" in has and "object_lock_mode" not in has:
            problems.append(("object_lock_mode", "required when object_lock_days is set"))
        if options.get("object_lock_days", 1) < 1:
            problems.append(("object_lock_days", "must be at least 1"))
        if not 5 <= options.get("part_size_mib", 8) <= 5120:
            problems.append(("part_size_mib", "must be between 5 (S3's minimum part) and 5120"))
        if not 1 <= options.get("upload_concurrency", DEFAULT_CONCURRENCY) <= 16:
            problems.append(("upload_concurrency", "must be between 1 and 16"))
        if options.get("timeout_seconds", 120) < 1:
            problems.append(("timeout_seconds", "must be at least 1"))
        if "sse_kms_key_id" in has and options.get("server_side_encryption") != "aws:kms":
            problems.append(("sse_kms_key_id", "needs server_side_encryption = aws:kms"))
        if ("access_key" in has) != ("secret_key" in has):
            problems.append(
                (
                    "secret_key" if "access_key" in has else "access_key",
                    "access_key and secret_key go together",
                )
            )
        if "session_token" in has and "access_key" not in has:
            problems.append(("session_token", "needs access_key and secret_key"))
        if "endpoint_url" in has:
            url = urlsplit(options["endpoint_url"])
            if "@" in options["endpoint_url"]:  # user:secret@host (a secret may hold a "/")
                problems.append(
                    ("endpoint_url", "must not contain credentials; use access_key and secret_key")
                )
            elif (
                url.scheme not in ("http", "https")
                or not url.hostname
                or not re.fullmatch(r"[^:]+(:\d+)?", url.netloc)
            ):
                problems.append(("endpoint_url", "must be an http:// or https:// URL"))
        return problems

    # -- the client and errors -------------------------------------------------------------------

    def client(self) -> Any:
        """One boto3 client for every thread (boto3's clients are thread-safe): django-storages
        would build a session and a client per thread, ~10 MiB and a model parse each, for every
        thread that uploads parts."""
        with self._client_lock:
            if self._client is None:
                self._client = self.backend().connection.meta.client
            return self._client

    def backend(self) -> Any:
        if self._backend is None:
            verify: bool | str | None = (
                False if self.opt("verify_tls", True) is False else self.opt("ca_bundle")
            )
            config = Config(
                signature_version="s3v4",  # presigned URLs carry X-Amz-Expires
                s3={"addressing_style": self.opt("addressing_style", "auto")},
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=self.connect_timeout,
                # A connection for each part in flight, plus one for the calls around them.
                max_pool_connections=max(10, self.concurrency + 1),
                read_timeout=self.timeout,
                # Many S3-compatible servers reject the newer default CRC32 trailers.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            # Every value is given so Django's AWS_* settings cannot leak into this storage.
            self._backend = DjangoS3Storage(
                bucket_name=self.bucket, access_key=self.opt("access_key"),
                secret_key=self.opt("secret_key"), security_token=self.opt("session_token"),
                session_profile=None, region_name=self.opt("region"),
                endpoint_url=self.opt("endpoint_url"), verify=verify, client_config=config,
                location="", custom_domain=None, querystring_auth=True, file_overwrite=False,
            )  # fmt: skip
        return self._backend

    def call(self, action: str, path: str, method: str, **kwargs: Any) -> Any:
        """One S3 operation on the object at ``path``; errors become plain StorageErrors."""
        try:
            return getattr(self.client(), method)(Bucket=self.bucket, Key=self.key(path), **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self.error(action, path, exc) from None

    def where(self) -> str:
        url = urlsplit(self.opt("endpoint_url", ""))
        return f" at {url.hostname}{f':{url.port}' if url.port else ''}" if url.hostname else ""

    def explain(self, exc: BaseException) -> str:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING:
                text = "does not exist"
            elif code in _PLAIN:
                text = _PLAIN[code]
            else:
                text = f"the server answered {code}: {error.get('Message', '')}"
        elif isinstance(exc, SSLError):
            text = f"TLS failed with the endpoint{self.where()} (check ca_bundle and verify_tls)"
        elif isinstance(exc, ReadTimeoutError):
            text = (
                f"the endpoint{self.where()} timed out: no answer within {self.timeout} s (timeout_seconds)"
            )
        elif _timed_out_sending(exc):
            text = f"the endpoint{self.where()} stalled: it took no bytes for {self.connect_timeout} s"
        elif isinstance(exc, ConnectionClosedError):
            text = f"the connection to the endpoint{self.where()} was lost"
        elif isinstance(exc, ConnectTimeoutError):
            text = f"cannot reach the S3 endpoint{self.where() or ' (AWS)'}: no answer within {self.connect_timeout} s"
        elif isinstance(exc, EndpointConnectionError):
            text = f"cannot reach the S3 endpoint{self.where() or ' (AWS)'}"
        elif isinstance(exc, NoCredentialsError):
            text = "no credentials (set access_key and secret_key, or configure boto3's environment)"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return self.scrub(text)

    def scrub(self, text: str) -> str:
        """Never let a secret or a signed URL's query string into a message."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return re.sub(r"(https?://[^\s?\"']*)\?\S*", r"\1?...", text)

    def error(self, action: str, path: str, exc: BaseException) -> StorageError:
        return StorageError(f"{self.name}: {action} {self.location(path)}: {self.explain(exc)}")

    def already_exists(self, path: str) -> StorageError:
        return StorageError(f"{self.name}: {self.location(path)} already exists; not overwriting it")

    # -- object settings -------------------------------------------------------------------------

    def lock_settings(self) -> tuple[str, datetime] | None:
        if not self.opt("object_lock_mode"):
            return None
        return self.options["object_lock_mode"], datetime.now(UTC) + timedelta(
            days=self.options["object_lock_days"]
        )

    def object_args(self, lock: tuple[str, datetime] | None) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.opt("storage_class"):
            args["StorageClass"] = self.options["storage_class"]
        if self.opt("server_side_encryption"):
            args["ServerSideEncryption"] = self.options["server_side_encryption"]
        if self.opt("sse_kms_key_id"):
            args["SSEKMSKeyId"] = self.options["sse_kms_key_id"]
        if lock:
            args["ObjectLockMode"], args["ObjectLockRetainUntilDate"] = lock
        return args

    def ensure_retention(self, path: str, version: str, lock: tuple[str, datetime]) -> None:
        # Some S3-compatible servers (moto among them) drop the Object Lock headers of
        # CreateMultipartUpload; set the retention explicitly when the object came out without.
        version_arg = {"VersionId": version} if version else {}
        head = self.call("cannot check the retention of", path, "head_object", **version_arg)
        if head.get("ObjectLockMode") != lock[0]:
            retention = {"Mode": lock[0], "RetainUntilDate": lock[1]}
            self.call("cannot set the retention of", path, "put_object_retention", **version_arg, Retention=retention)  # fmt: skip

    # -- the contract ----------------------------------------------------------------------------

    def open_writer(self, path: str) -> ObjectWriter:
        return _S3Writer(self, path)

    def open_reader(self, path: str) -> BinaryIO:
        response = self.call("cannot read", path, "get_object")
        return cast(BinaryIO, _S3Reader(self, path, response["Body"]))

    def head(self, path: str) -> dict[str, Any] | None:
        key = self.key(path)
        try:
            head: dict[str, Any] = self.client().head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise self.error("cannot look at", path, exc) from None
        except BotoCoreError as exc:
            raise self.error("cannot look at", path, exc) from None
        return head

    def exists(self, path: str) -> bool:
        return self.head(path) is not None

    def size(self, path: str) -> int:
        head = self.head(path)
        if head is None:
            raise StorageError(f"{self.name}: {self.location(path)} does not exist")
        return int(head["ContentLength"])

    def delete(self, path: str) -> None:
        self.call("cannot delete", path, "delete_object")

    def check_writable(self) -> None:
        # A multipart upload with one small part, then aborted: proves the bucket, the
        # credentials, PutObject and the object settings, and leaves no object behind (an
        # object probe could not be deleted from a bucket with default Object Lock retention).
        key = self.key(probe_name())
        try:
            client = self.client()
            upload = client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **self.object_args(self.lock_settings())
            )
            try:
                client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"probe"
                )
            finally:
                client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(
                f"{self.name}: cannot write to s3://{self.bucket}/{self.prefix}{self.where()}: {self.explain(exc)}"
            ) from None

    def pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """A paginated listing; errors name the bucket and prefix listed."""
        try:
            yield from self.client().get_paginator(operation).paginate(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            where = f"s3://{self.bucket}/{kwargs.get('Prefix', '')}{self.where()}"
            raise StorageError(f"{self.name}: cannot list {where}: {self.explain(exc)}") from None

    def uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        for page in self.pages("list_multipart_uploads", Prefix=prefix):
            yield from page.get("Uploads", [])

    def abort_upload(self, upload: dict[str, Any]) -> None:
        path = self.relative(upload["Key"])
        self.call("cannot abort a leftover upload of", path, "abort_multipart_upload", UploadId=upload["UploadId"])  # fmt: skip

    def sweep_partials(self, path: str) -> int:
        key = self.key(path)
        leftovers = [upload for upload in self.uploads(key) if upload["Key"] == key]
        for upload in leftovers:
            self.abort_upload(upload)
        return len(leftovers)

    def sweep_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        cutoff = datetime.now(UTC) - older_than
        removed = 0
        for upload in list(self.uploads(f"{self.prefix}/" if self.prefix else "")):
            if upload["Initiated"] <= cutoff and self.last_part_time(upload) <= cutoff:
                self.abort_upload(upload)
                removed += 1
        return removed

    def last_part_time(self, upload: dict[str, Any]) -> datetime:
        """An upload initiated long ago may still be receiving parts (a huge backup): alive."""
        path = self.relative(upload["Key"])
        parts = self.call("cannot list the parts of", path, "list_parts", UploadId=upload["UploadId"])
        parts = parts.get("Parts", [])
        return max([part["LastModified"] for part in parts], default=upload["Initiated"])

    def list_objects(self) -> Iterator[StoredObject]:
        for page in self.pages("list_objects_v2", Prefix=f"{self.prefix}/" if self.prefix else ""):
            for item in page.get("Contents", []):
                path = self.relative(item["Key"])
                if path.endswith("/") or is_probe(path.rsplit("/", 1)[-1]):
                    continue  # folder markers and probes are not backups
                yield StoredObject(
                    path=path,
                    size=int(item["Size"]),
                    etag=item.get("ETag", "").strip('"'),
                    modified=item.get("LastModified"),
                )

    def location(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.key(path)}{self.where()}"

    def signed_url(self, path: str, expires_seconds: int) -> str:
        if not 1 <= expires_seconds <= 7 * 24 * 3600:
            raise StorageError(f"{self.name}: a signed URL must expire within 1 s to 7 days")
        try:
            return str(self.backend().url(self.key(path), expire=expires_seconds))
        except (BotoCoreError, ClientError) as exc:
            raise self.error("cannot sign a URL for", path, exc) from None

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
            backend, self._backend = self._backend, None
        if client is not None:
            client.close()
        if backend is not None and getattr(backend._connections, "connection", None) is not None:
            backend.connection.meta.client.close()
