"""The gcs storage against gcp-storage-emulator: failures, credentials, options, signed URLs.

What the emulator cannot show (see tests/servers/gcs.py): it checks no credentials (the token
endpoint beside it does), ignores ``ifGenerationMatch`` (the storage's look before the upload
refuses an existing name there; GCS enforces the precondition too), cannot cancel upload
sessions (DELETE answers 501) and does not verify URL signatures.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from backups.storages import StorageError, build_storage
from backups.storages.gcs import GCSStorage
from tests.conftest import REPO
from tests.plugins.gcs import BUCKET, gcs_options
from tests.servers import free_port
from tests.servers.gcs import SERVICE_ACCOUNT, GCSServer, key_pem, new_key
from tests.servers.proxy import cuttable_proxy

MIB = 1024 * 1024
_count = iter(range(1, 10_000))


@pytest.fixture
def server(gcs_server: GCSServer) -> GCSServer:
    return gcs_server


def make(server: GCSServer, **extra: object) -> GCSStorage:
    return GCSStorage("gcs", gcs_options(server, **extra), prefix=f"kind-{next(_count)}-{os.getpid()}")


def test_it_never_connects_when_built_and_gives_a_down_server_a_clear_message(server: GCSServer) -> None:
    port = free_port()  # nothing listens there
    store = GCSStorage(
        "offsite", gcs_options(server, endpoint_url=f"http://127.0.0.1:{port}", timeout_seconds=2)
    )
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        store.check_writable()
    assert str(caught.value).startswith("offsite: cannot write to gs://backupsite-tests: cannot connect to")
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert time.monotonic() - started < 30
    writer = store.open_writer("a/b.bin")  # opening sends nothing either
    writer.write(b"x" * 10)
    with pytest.raises(StorageError, match="cannot connect"):
        writer.commit()
    writer.abort()


def test_it_fails_a_connection_cut_mid_upload_and_leaves_no_object(server: GCSServer) -> None:
    direct = make(server)
    with cuttable_proxy(server.host, server.port) as proxy:
        proxied = GCSStorage(
            "gcs", gcs_options(server, endpoint_url=f"http://{proxy.host}:{proxy.port}", chunk_size_mib=1),
            prefix=direct.prefix,
        )  # fmt: skip
        proxy.cut_after(10 * MIB)
        writer = proxied.open_writer("db/cut.bin")
        block = os.urandom(MIB)
        with pytest.raises(StorageError) as caught:
            for _ in range(20):
                writer.write(block)
            writer.commit()
        writer.abort()
        assert proxy.cuts >= 1 and proxy.upstream_bytes < 12 * MIB  # cut about halfway
    assert "upload failed for gs://backupsite-tests/" in str(caught.value)
    assert "connection" in str(caught.value)
    assert not direct.exists("db/cut.bin")
    assert list(direct.list_objects()) == []
    # The unfinished session is invisible and expires at Google; nothing to sweep.
    assert direct.sweep_stale(timedelta(0)) == 0


WORKER = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
from backups.storages.gcs import GCSStorage
options, prefix = json.loads(sys.argv[1]), sys.argv[2]
writer = GCSStorage("gcs", options, prefix=prefix).open_writer("db/killed.bin")
block = os.urandom(1024 * 1024)
for i in range(10_000):
    writer.write(block)
    if i == 3:  # a chunk or more has reached the server
        print("writing", flush=True)
"""


def test_it_leaves_no_object_of_a_killed_writer(server: GCSServer) -> None:
    store = make(server)
    options = gcs_options(server, chunk_size_mib=1)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(options), store.prefix],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "writing"
        time.sleep(0.3)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    assert worker.returncode == -signal.SIGKILL
    assert not store.exists("db/killed.bin")
    assert list(store.list_objects()) == []
    assert store.sweep_stale(timedelta(0)) == 0  # documented: sessions expire at Google


def test_it_gives_wrong_credentials_a_clear_message_without_the_key(
    server: GCSServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = new_key()  # same service account, a key Google (here: the token endpoint) never issued
    path = server.credentials_file("wrong.json", key=wrong)
    store = make(server, credentials_file=str(path))
    refused_before = len(server.token.refused)
    secret_line = key_pem(wrong).splitlines()[5]
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(StorageError) as caught:
            store.check_writable()
        with pytest.raises(StorageError, match="credentials were refused"):
            store.put_bytes("a.bin", b"data")
    message = str(caught.value)
    assert (
        message
        == "gcs: cannot write to gs://backupsite-tests: the credentials were refused (check credentials_file)"
    )
    for text in (message, repr(caught.value.args), caplog.text):
        assert secret_line not in text
        assert "PRIVATE KEY" not in text
    assert len(server.token.refused) > refused_before  # the token endpoint saw the grant and said no


def test_it_names_an_unreadable_credentials_file_but_does_not_quote_it(
    server: GCSServer, tmp_path: Path
) -> None:
    missing = make(server, credentials_file=str(tmp_path / "absent.json"))
    with pytest.raises(StorageError, match=r"cannot read credentials_file .*absent.json: No such file"):
        missing.check_writable()
    garbled = tmp_path / "garbled.json"
    garbled.write_text(
        '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nsecretbits"}'
    )
    with pytest.raises(StorageError) as caught:
        make(server, credentials_file=str(garbled)).check_writable()
    assert "is not a service-account JSON key" in str(caught.value)
    assert "secretbits" not in str(caught.value)


def test_it_names_a_missing_bucket(server: GCSServer) -> None:
    store = GCSStorage("gcs", gcs_options(server, bucket="no-such-bucket"))
    with pytest.raises(StorageError, match="bucket no-such-bucket does not exist"):
        store.check_writable()
    with pytest.raises(StorageError, match="bucket no-such-bucket does not exist"):
        store.put_bytes("x.bin", b"x")


def test_it_refuses_to_overwrite_before_sending_a_large_object(server: GCSServer) -> None:
    store = make(server, chunk_size_mib=1)
    store.put_bytes("db/full.bin", b"original")
    writer = store.open_writer("db/full.bin")
    # The first full chunk starts the session, and the name is refused there: not at the end.
    with pytest.raises(StorageError, match="already exists; not overwriting it"):
        writer.write(b"x" * (2 * MIB))
    writer.abort()
    assert store.read_bytes("db/full.bin") == b"original"


def test_it_signs_a_url_that_names_the_endpoint_and_expiry_and_downloads(server: GCSServer) -> None:
    store = make(server)
    store.put_bytes("db/signed.bin", b"signed content")
    url = store.signed_url("db/signed.bin", 120)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}" == server.endpoint
    assert parts.path == f"/{BUCKET}/{store.prefix}/db/signed.bin"
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["120"]
    assert query["X-Goog-Credential"][0].startswith(SERVICE_ACCOUNT + "/")
    assert len(query["X-Goog-Signature"][0]) == 512  # RSA-2048, hex
    # The emulator serves the object without checking the signature; GCS checks it.
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"signed content"


def test_it_refuses_plainly_to_sign_without_a_private_key(server: GCSServer) -> None:
    options = gcs_options(server, anonymous=True)
    del options["credentials_file"]
    store = GCSStorage("gcs", options)
    store.put_bytes("x.bin", b"x")  # anonymous requests work on the emulator
    with pytest.raises(StorageError, match="signing URLs needs credentials_file with a service-account key"):
        store.signed_url("x.bin", 60)
    store.delete("x.bin")


def test_it_keeps_credentials_out_of_its_location(server: GCSServer) -> None:
    store = GCSStorage("gcs", gcs_options(server), prefix="site")
    assert store.location("db/a.gz") == f"gs://{BUCKET}/site/db/a.gz"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "bucket: required"),
        ({"bucket": "b", "chunk_size_mib": 0}, "chunk_size_mib: must be between 1 and 1024"),
        ({"bucket": "b", "chunk_size_mib": "8"}, "chunk_size_mib: must be a whole number"),
        ({"bucket": "b", "endpoint_url": "localhost:4443"}, "endpoint_url: must start with http"),
        ({"bucket": "b", "anonymous": True, "credentials_file": "/k.json"}, "anonymous: cannot be combined"),
        ({"bucket": "b", "region": "eu"}, "region: unknown option for the gcs storage kind"),
    ],
)
def test_it_names_the_option_of_an_option_problem(options: dict[str, object], named: str) -> None:
    with pytest.raises(StorageError, match=f"^offsite: .*{named}"):
        build_storage("offsite", "gcs", options)
