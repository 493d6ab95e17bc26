"""The s3 storage against moto's real S3 server (a separate process): failures, options, secrets.

The shared behaviour (atomic writes, listings, sweeps, 200 MiB streaming) is in
``test_storage_contract.py``; these are the S3-specific parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from backups.storages import StorageError, build_storage
from backups.storages.s3 import MAX_PART, MAX_PARTS, MIB, S3Storage
from tests.conftest import REPO
from tests.servers import free_port
from tests.servers.proxy import cuttable_proxy
from tests.servers.s3 import S3Server

SECRET = "Sup3r-s3cret/key+that-must-never-show"
TOKEN = "session-token-that-must-never-show"


def uploads(server: S3Server, bucket: str) -> list[dict[str, Any]]:
    """In-progress multipart uploads, asked straight from moto (no proxy, no storage code)."""
    return list(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(server: S3Server, bucket: str) -> list[str]:
    return [item["Key"] for item in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_it_does_not_connect_when_built_and_keeps_secrets_out_of_its_location() -> None:
    options = {"bucket": "b", "endpoint_url": f"http://127.0.0.1:{free_port()}", "access_key": "AKID"}
    storage = build_storage("offsite", "s3", {**options, "secret_key": SECRET}, prefix="site")
    assert isinstance(storage, S3Storage)
    assert storage.location("app/x.gz").startswith("s3://b/site/app/x.gz at 127.0.0.1:")
    assert "AKID" not in storage.location("app/x.gz")


def test_it_gives_a_clear_error_when_the_server_is_down() -> None:
    port = free_port()  # nothing listens here
    options = {
        "bucket": "b",
        "endpoint_url": f"http://127.0.0.1:{port}",
        "access_key": "k",
        "secret_key": SECRET,
    }
    storage = S3Storage("offsite", options)
    with pytest.raises(
        StorageError, match=rf"offsite: cannot write to s3://b/ at 127.0.0.1:{port}: cannot reach"
    ):
        storage.check_writable()
    with pytest.raises(StorageError, match=r"offsite: .*s3://b/app/x.gz .*cannot reach the S3 endpoint"):
        storage.put_bytes("app/x.gz", b"data")


def test_it_aborts_the_upload_when_the_connection_is_cut_mid_upload(
    s3_server: S3Server, s3_bucket: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    bucket = s3_bucket()
    with cuttable_proxy(s3_server.host, s3_server.port) as proxy:
        options = {**s3_server.options(bucket), "endpoint_url": f"http://127.0.0.1:{proxy.port}"}
        storage = S3Storage("offsite", options, prefix="site")
        writer = storage.open_writer("app/big.bin")
        proxy.cut_after(20 * MIB)
        block = os.urandom(MIB)
        with pytest.raises(
            StorageError, match=r"offsite: upload failed for s3://b|offsite: .*site/app/big.bin"
        ) as caught:
            for _ in range(40):
                writer.write(block)
            writer.commit()
        assert proxy.cuts >= 1
        assert "was lost" in str(caught.value) or "cannot reach" in str(caught.value)
        # The link is still down, so the writer's own abort could not reach the server: it
        # said so and kept the upload id; the pipeline's abort() retries once the link is back.
        assert "a later sweep removes its parts" in caplog.text
        proxy.allow()
        writer.abort()
    assert keys(s3_server, bucket) == []
    assert uploads(s3_server, bucket) == []


_DYING_WRITER = """
import json, os, sys, time
from backups.storages.s3 import S3Storage
storage = S3Storage("offsite", json.loads(sys.argv[1]), prefix="site")
writer = storage.open_writer("app/killed.bin")
writer.write(os.urandom(6 * 1024 * 1024))  # one 5 MiB part uploaded, 1 MiB buffered
print("written", flush=True)
time.sleep(600)
"""


def test_it_leaves_an_upload_of_a_killed_writer_that_only_a_stale_sweep_removes(
    s3_server: S3Server, s3_bucket: Callable[..., str]
) -> None:
    bucket = s3_bucket()
    options = s3_server.options(bucket, part_size_mib=5)
    worker = subprocess.Popen(
        [sys.executable, "-c", _DYING_WRITER, json.dumps(options)],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "written"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    storage = S3Storage("offsite", options, prefix="site")
    other = S3Storage("offsite", options, prefix="elsewhere")
    other.open_writer("app/alive.bin").write(b"not under site/")
    assert not storage.exists("app/killed.bin")
    assert list(storage.list_objects()) == []
    assert sorted(u["Key"] for u in uploads(s3_server, bucket)) == [
        "elsewhere/app/alive.bin",
        "site/app/killed.bin",
    ]
    assert storage.sweep_stale() == 0  # younger than a day: maybe still running
    assert storage.sweep_stale(timedelta(0)) == 1
    assert [u["Key"] for u in uploads(s3_server, bucket)] == ["elsewhere/app/alive.bin"]
    assert keys(s3_server, bucket) == []


def test_it_sweeps_only_that_objects_uploads(s3_server: S3Server, storage_s3: S3Storage) -> None:
    storage_s3.open_writer("app/a.bin").write(b"a")
    storage_s3.open_writer("app/a.bin").write(b"a again")
    storage_s3.open_writer("app/a.bin.manifest.json").write(b"{}")
    assert storage_s3.sweep_partials("app/a.bin") == 2
    assert [u["Key"] for u in uploads(s3_server, storage_s3.bucket)] == [
        "contract/site/app/a.bin.manifest.json"
    ]


@pytest.mark.parametrize(
    ("access_key", "secret_key", "token", "expected"),
    [
        ("right", SECRET, None, "the server rejected the request signature \\(check secret_key\\)"),
        ("AKIAUNKNOWN0000000000", SECRET, None, "the server does not know this access key"),
        ("AKIAUNKNOWN0000000000", SECRET, TOKEN, "the server does not know this access key"),
    ],
)
def test_it_gives_wrong_credentials_a_plain_message_without_the_secret(
    s3_auth_server: S3Server,
    caplog: pytest.LogCaptureFixture,
    access_key: str,
    secret_key: str,
    token: str | None,
    expected: str,
) -> None:
    caplog.set_level(logging.INFO)
    buckets = [b["Name"] for b in s3_auth_server.client().list_buckets()["Buckets"]]
    if "auth-bucket" not in buckets:
        s3_auth_server.client().create_bucket(Bucket="auth-bucket")
    if access_key == "right":
        access_key = s3_auth_server.access_key
    options = s3_auth_server.options("auth-bucket", access_key=access_key, secret_key=secret_key)
    if token:
        options["session_token"] = token
    storage = S3Storage("offsite", options)
    failures = []
    attempts: tuple[Callable[[], object], ...] = (
        storage.check_writable,
        lambda: storage.put_bytes("x.bin", b"x"),
        storage.list_objects,
        lambda: storage.open_reader("x.bin"),
    )
    for attempt in attempts:
        with pytest.raises(StorageError, match=expected) as caught:
            result = attempt()
            if isinstance(result, Iterator):
                list(result)
        failures.append(caught.value)
    for failure in failures:
        for text in (str(failure), repr(failure), repr(failure.args)):
            assert secret_key not in text and TOKEN not in text and "Signature=" not in text
        assert failure.__cause__ is None
    assert secret_key not in caplog.text and TOKEN not in caplog.text
    # the right keys do work on the same server
    S3Storage("offsite", s3_auth_server.options("auth-bucket")).check_writable()


def test_it_names_a_missing_bucket_plainly(s3_server: S3Server) -> None:
    storage = S3Storage("offsite", s3_server.options("no-such-bucket"))
    with pytest.raises(
        StorageError, match=r"offsite: cannot write to s3://no-such-bucket/ at .*the bucket does not exist"
    ):
        storage.check_writable()


def test_it_passes_storage_class_encryption_and_object_lock_to_the_object(
    s3_server: S3Server, s3_bucket: Callable[..., str]
) -> None:
    bucket = s3_bucket(ObjectLockEnabledForBucket=True)
    options = s3_server.options(
        bucket,
        storage_class="STANDARD_IA",
        server_side_encryption="AES256",
        object_lock_mode="GOVERNANCE",
        object_lock_days=3,
        part_size_mib=5,
    )
    storage = S3Storage("offsite", options, prefix="site")
    sent: list[dict[str, Any]] = []
    storage.client().meta.events.register(
        "before-call.s3.CreateMultipartUpload", lambda params, **_: sent.append(params["headers"])
    )
    storage.check_writable()
    small = storage.put_bytes("app/small.bin", b"small")
    big = storage.put_bytes("app/big.bin", os.urandom(11 * MIB))  # three parts
    for path, stored in (("app/small.bin", small), ("app/big.bin", big)):
        head = s3_server.client().head_object(Bucket=bucket, Key=f"site/{path}")
        assert head["StorageClass"] == "STANDARD_IA"
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ObjectLockMode"] == "GOVERNANCE"
        days = (head["ObjectLockRetainUntilDate"] - datetime.now(UTC)).total_seconds() / 86400
        assert 2.9 < days <= 3
        assert stored.version == head["VersionId"] and stored.etag == head["ETag"].strip('"')
    # Real S3 applies the lock at CreateMultipartUpload (moto drops it; the storage then sets it).
    assert len(sent) == 3
    for headers in sent:
        assert headers["x-amz-object-lock-mode"] == "GOVERNANCE"
        assert headers["x-amz-storage-class"] == "STANDARD_IA"
        assert headers["x-amz-server-side-encryption"] == "AES256"
    assert uploads(s3_server, bucket) == []


def test_it_passes_kms_encryption_to_the_object(s3_server: S3Server, s3_bucket: Callable[..., str]) -> None:
    bucket = s3_bucket()
    options = s3_server.options(bucket, server_side_encryption="aws:kms", sse_kms_key_id="alias/backups")
    S3Storage("offsite", options).put_bytes("x.bin", b"x")
    head = s3_server.client().head_object(Bucket=bucket, Key="x.bin")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == "alias/backups"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"object_lock_mode": "GOVERNANCE"}, "object_lock_days: required when object_lock_mode is set"),
        ({"object_lock_days": 7}, "object_lock_mode: required when object_lock_days is set"),
        ({"object_lock_mode": "COMPLIANCE", "object_lock_days": 0}, "object_lock_days: must be at least 1"),
        (
            {"object_lock_mode": "FOREVER", "object_lock_days": 1},
            "object_lock_mode: must be one of GOVERNANCE",
        ),
        ({"part_size_mib": 4}, "part_size_mib: must be between 5"),
        ({"part_size_mib": "8"}, "part_size_mib: must be a whole number"),
        ({"server_side_encryption": "rot13"}, "server_side_encryption: must be one of AES256, aws:kms"),
        ({"sse_kms_key_id": "k"}, "sse_kms_key_id: needs server_side_encryption = aws:kms"),
        ({"access_key": "AKID"}, "secret_key: access_key and secret_key go together"),
        ({"session_token": TOKEN}, "session_token: needs access_key and secret_key"),
        ({"endpoint_url": "s3.example.net"}, "endpoint_url: must be an http:// or https:// URL"),
        (
            {"endpoint_url": f"https://AKID:{SECRET}@s3.example.net"},
            "endpoint_url: must not contain credentials",
        ),
        ({"addressing_style": "sideways"}, "addressing_style: must be one of auto, path, virtual"),
        ({"verify_tls": "no"}, "verify_tls: must be true or false"),
        ({"bucket": ""}, "bucket: required"),
        ({"prefix": "x"}, "prefix: unknown option for the s3 storage kind"),
    ],
)
def test_it_names_the_option_of_an_option_problem(options: dict[str, Any], message: str) -> None:
    with pytest.raises(StorageError, match="offsite: .*" + message.replace("(", r"\(")) as caught:
        S3Storage("offsite", {"bucket": "b", **options})
    assert SECRET not in str(caught.value) and TOKEN not in str(caught.value)


def test_it_signs_a_url_with_the_requested_expiry(s3_server: S3Server, storage_s3: S3Storage) -> None:
    storage_s3.put_bytes("app/signed.bin", b"signed")
    url = storage_s3.signed_url("app/signed.bin", 300)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["300"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert s3_server.secret_key not in url
    assert urlsplit(url).path == f"/{storage_s3.bucket}/contract/site/app/signed.bin"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == b"signed"
    for bad in (0, 8 * 24 * 3600):
        with pytest.raises(StorageError, match="expire within"):
            storage_s3.signed_url("app/signed.bin", bad)


def test_it_grows_parts_so_huge_objects_fit_in_10000_parts(storage_s3: S3Storage) -> None:
    writer = storage_s3.open_writer("app/huge.bin")
    sizes = []
    for count in range(MAX_PARTS):
        writer.numbered = count  # type: ignore[attr-defined]
        sizes.append(writer.part_size())  # type: ignore[attr-defined]
    writer.numbered = 0  # type: ignore[attr-defined]
    writer.abort()
    assert sizes[0] == 8 * MIB and min(sizes) >= 5 * MIB and max(sizes) <= MAX_PART
    assert sum(sizes) >= 5 * 1024**4  # S3's largest object, 5 TiB
    assert sizes == sorted(sizes)


def test_it_streams_a_reader_and_reconnects_after_close(storage_s3: S3Storage) -> None:
    data = os.urandom(3 * MIB)
    storage_s3.put_bytes("app/r.bin", data)
    storage_s3.close()
    reader = storage_s3.open_reader("app/r.bin")
    chunks = []
    while chunk := reader.read(MIB):
        assert len(chunk) <= MIB
        chunks.append(chunk)
    reader.close()
    assert b"".join(chunks) == data
    storage_s3.delete("app/r.bin")
    with pytest.raises(
        StorageError, match=r"s3: cannot read s3://.*/contract/site/app/r.bin at .*: does not exist"
    ):
        storage_s3.open_reader("app/r.bin")


def test_it_assembles_parts_uploaded_concurrently_in_order(
    s3_server: S3Server, s3_bucket: Callable[..., str]
) -> None:
    storage = S3Storage(
        "s3", s3_server.options(s3_bucket(), upload_concurrency=4, part_size_mib=5), prefix="p"
    )
    sha = hashlib.sha256()
    writer = storage.open_writer("app/parallel.bin")
    for _ in range(33):  # 33 MiB: six full parts and a short last one, four in flight at a time
        chunk = os.urandom(MIB)
        sha.update(chunk)
        writer.write(chunk)
    assert writer.commit().size == 33 * MIB
    assert storage.digest("app/parallel.bin") == (33 * MIB, sha.hexdigest())
    with pytest.raises(StorageError, match="upload_concurrency: must be between 1 and 16"):
        S3Storage("s3", s3_server.options("b", upload_concurrency=0))
