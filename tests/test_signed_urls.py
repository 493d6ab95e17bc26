"""Signed URLs against servers that check signatures: a valid URL downloads the exact bytes; an
expired one, one with a changed signature and one pointed at another object are refused.

- S3: moto with authentication on (``s3_auth_server``), whose wrapper checks SigV4 query
  signatures (``tests/servers/s3.py`` says why moto alone cannot); the check itself is pinned
  here by AWS's published example, so it is not botocore checking itself.
- Azure: Azurite checks SAS signatures itself (HMAC-SHA256 with the account key).
- GCS: the emulator checks none (it serves a tampered URL, shown below), so the V4 signature is
  verified here against the service account's public key, as GCS does, and the emulator only
  proves that the URL names the right object.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from backups.storages.azure import AzureStorage
from backups.storages.gcs import GCSStorage
from backups.storages.s3 import S3Storage
from tests.plugins.azure import azure_options
from tests.plugins.gcs import gcs_options
from tests.servers.azurite import AzuriteServer
from tests.servers.gcs import SERVICE_ACCOUNT, GCSServer
from tests.servers.s3 import S3Server, presigned_refusal

PAYLOAD = os.urandom(200_000) + b"\x00\xff end"  # binary, and more than one read's worth


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


def refused(url: str) -> int:
    """The HTTP status of a refused GET (fails the test if the server serves it)."""
    with pytest.raises(urllib.error.HTTPError) as caught:
        fetch(url)
    return caught.value.code


def with_query(url: str, name: str, change: Callable[[str], str]) -> str:
    """``url`` with the value of query parameter ``name`` changed (the rest kept byte for byte)."""
    base, _, query = url.partition("?")
    parts = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        parts.append(f"{key}={quote(change(unquote(value)), safe='')}" if key == name else part)
    return f"{base}?{'&'.join(parts)}"


def flip(text: str) -> str:
    """One character of ``text`` changed (the middle one)."""
    middle = len(text) // 2
    return text[:middle] + ("0" if text[middle] != "0" else "1") + text[middle + 1 :]


def other_object(url: str, path: str, other: str) -> str:
    """``url`` pointed at another existing object, its signature kept."""
    base, _, query = url.partition("?")
    old = urlsplit(base).path
    assert old.endswith(path)
    return base[: -len(path)] + other + "?" + query


# -- S3 -----------------------------------------------------------------------------------------------

AWS_EXAMPLE = (  # "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)"
    "/test.txt",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
    "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
)
AWS_EXAMPLE_KEYS = {"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}


def test_it_checks_s3_query_signatures_as_aws_documents_them() -> None:
    path, query = AWS_EXAMPLE
    host = {"Host": "examplebucket.s3.amazonaws.com"}
    signed_at = datetime(2013, 5, 24, tzinfo=UTC)

    def check(query: str = query, path: str = path, at: timedelta = timedelta(hours=1)) -> str | None:
        return presigned_refusal("GET", path, query, host, AWS_EXAMPLE_KEYS.get, signed_at + at)

    assert check() is None
    assert check(at=timedelta(days=1, seconds=1)) == "AccessDenied"  # expired
    assert check(path="/test.txu") == "SignatureDoesNotMatch"
    assert check(query.replace("aeeed9bb", "aeeed9bc")) == "SignatureDoesNotMatch"
    assert check(query.replace("Expires=86400", "Expires=86401")) == "SignatureDoesNotMatch"
    assert check(query.replace("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLF")) == "InvalidAccessKeyId"
    assert check(query.replace("Expires=86400", "Expires=0")) == "AccessDenied"


@pytest.fixture(scope="module")
def signing_s3(s3_auth_server: S3Server) -> Iterator[S3Storage]:
    bucket = f"signed-{os.getpid()}"
    s3_auth_server.client().create_bucket(Bucket=bucket)
    storage = S3Storage("s3", s3_auth_server.options(bucket), prefix="site")
    storage.put_bytes("db/backup.bin", PAYLOAD)
    storage.put_bytes("db/other.bin", b"another backup")
    yield storage
    storage.close()


def test_it_downloads_the_exact_bytes_with_a_valid_s3_signed_url(signing_s3: S3Storage) -> None:
    url = signing_s3.signed_url("db/backup.bin", 300)
    assert "X-Amz-Signature=" in url
    assert fetch(url) == PAYLOAD
    # The same object without the signature is refused: the bytes came because of it.
    assert refused(url.partition("?")[0]) == 403


def test_it_has_an_expired_s3_signed_url_refused(signing_s3: S3Storage) -> None:
    url = signing_s3.signed_url("db/backup.bin", 1)
    time.sleep(2.2)
    assert refused(url) == 403


def test_it_has_a_tampered_s3_signed_url_refused(signing_s3: S3Storage, s3_auth_server: S3Server) -> None:
    url = signing_s3.signed_url("db/backup.bin", 300)
    assert refused(with_query(url, "X-Amz-Signature", flip)) == 403
    assert refused(with_query(url, "X-Amz-Expires", lambda value: "600")) == 403  # a longer life
    assert refused(other_object(url, "db/backup.bin", "db/other.bin")) == 403
    # Signed with a secret the server does not know: refused too.
    wrong = S3Storage(
        "s3", s3_auth_server.options(signing_s3.bucket, secret_key="not-the-secret"), prefix="site"
    )
    try:
        assert refused(wrong.signed_url("db/backup.bin", 300)) == 403
    finally:
        wrong.close()


# -- Azure --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_azure(azurite_server: AzuriteServer) -> Iterator[AzureStorage]:
    store = AzureStorage("azure", azure_options(azurite_server), prefix=f"signed-{os.getpid()}")
    store.put_bytes("db/backup.bin", PAYLOAD)
    store.put_bytes("db/other.bin", b"another backup")
    yield store
    store.close()


def test_it_downloads_the_exact_bytes_with_a_valid_azure_sas_url(signing_azure: AzureStorage) -> None:
    url = signing_azure.signed_url("db/backup.bin", 300)
    assert "sig=" in url
    assert fetch(url) == PAYLOAD
    assert refused(url.partition("?")[0]) in (403, 404)  # Azurite: no anonymous reads of this container


def test_it_has_an_expired_azure_sas_url_refused(signing_azure: AzureStorage) -> None:
    url = signing_azure.signed_url("db/backup.bin", 1)
    time.sleep(2.2)
    assert refused(url) == 403


def test_it_has_a_tampered_azure_sas_url_refused(
    signing_azure: AzureStorage, azurite_server: AzuriteServer
) -> None:
    url = signing_azure.signed_url("db/backup.bin", 300)
    assert refused(with_query(url, "sig", flip)) == 403
    assert refused(with_query(url, "se", lambda value: value.replace(value[:4], "2099"))) == 403
    assert refused(with_query(url, "sp", lambda value: "rw")) == 403  # more rights than signed for
    assert refused(other_object(url, "db/backup.bin", "db/other.bin")) == 403
    other_key = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU2Nzg5YWJjZGVmZ2hpams="  # not the account's
    wrong = AzureStorage(
        "azure", azure_options(azurite_server, account_key=other_key), prefix=signing_azure.prefix
    )
    try:
        assert refused(wrong.signed_url("db/backup.bin", 300)) == 403
    finally:
        wrong.close()


# -- GCS ----------------------------------------------------------------------------------------------


def goog4_string_to_sign(url: str) -> str:
    """The V4 string to sign of a GET URL, per Google's "Signature V4 signing process"."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    values = dict(params)
    query = "&".join(
        f"{name}={value}"
        for name, value in sorted(
            (quote(name, safe="-_.~"), quote(value, safe="-_.~"))
            for name, value in params
            if name != "X-Goog-Signature"
        )
    )
    headers = {"host": parts.netloc}
    signed = values["X-Goog-SignedHeaders"].split(";")
    canonical = "\n".join(
        [
            "GET",
            quote(unquote(parts.path), safe="/-_.~"),
            query,
            "".join(f"{name}:{headers[name]}\n" for name in signed),
            values["X-Goog-SignedHeaders"],
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = values["X-Goog-Credential"].split("/", 1)[1]
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"GOOG4-RSA-SHA256\n{values['X-Goog-Date']}\n{scope}\n{digest}"


def goog4_valid(url: str, server: GCSServer, now: datetime) -> bool:
    """What GCS decides: the signature verifies with the service account's public key and the
    URL has not expired."""
    values = dict(parse_qsl(urlsplit(url).query))
    signed_at = datetime.strptime(values["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if now > signed_at + timedelta(seconds=int(values["X-Goog-Expires"])):
        return False
    try:
        server.key.public_key().verify(
            bytes.fromhex(values["X-Goog-Signature"]),
            goog4_string_to_sign(url).encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def test_it_signs_gcs_urls_that_verify_with_the_service_account_key(gcs_server: GCSServer) -> None:
    store = GCSStorage("gcs", gcs_options(gcs_server), prefix=f"signed-{os.getpid()}")
    try:
        store.put_bytes("db/backup.bin", PAYLOAD)
        store.put_bytes("db/other.bin", b"another backup")
        url = store.signed_url("db/backup.bin", 120)
        now = datetime.now(UTC)
        assert dict(parse_qsl(urlsplit(url).query))["X-Goog-Credential"].startswith(SERVICE_ACCOUNT + "/")
        assert goog4_valid(url, gcs_server, now)
        assert not goog4_valid(url, gcs_server, now + timedelta(seconds=121))  # expired
        assert not goog4_valid(with_query(url, "X-Goog-Signature", flip), gcs_server, now)
        assert not goog4_valid(with_query(url, "X-Goog-Expires", lambda value: "600"), gcs_server, now)
        tampered = other_object(url, "db/backup.bin", "db/other.bin")
        assert not goog4_valid(tampered, gcs_server, now)
        # The emulator names the right object by the URL: the exact bytes come back ...
        assert fetch(url) == PAYLOAD
        # ... but it checks no signature (it serves the tampered URL too), so the refusals above
        # are this test's own V4 check, not the server's. That is all this emulator can prove.
        assert fetch(tampered) == b"another backup"
    finally:
        store.delete("db/backup.bin")
        store.delete("db/other.bin")
        store.close()
