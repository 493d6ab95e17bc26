"""The azure storage against Azurite: failures, leftovers, credentials, options, SAS URLs."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from backups.storages import StorageError, build_storage
from backups.storages.azure import AzureStorage
from tests.conftest import REPO
from tests.plugins.azure import CONTAINER, azure_options
from tests.servers import free_port
from tests.servers.azurite import AzuriteServer
from tests.servers.proxy import cuttable_proxy

MIB = 1024 * 1024
_count = iter(range(1, 10_000))


@pytest.fixture
def server(azurite_server: AzuriteServer) -> AzuriteServer:
    return azurite_server


def make(server: AzuriteServer, **extra: object) -> AzureStorage:
    return AzureStorage("azure", azure_options(server, **extra), prefix=f"kind-{next(_count)}-{os.getpid()}")


def uncommitted(server: AzuriteServer, prefix: str) -> list[str]:
    with BlobServiceClient.from_connection_string(server.connection_string()) as client:
        container = client.get_container_client(CONTAINER)
        every = {b.name for b in container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])}
        committed = {b.name for b in container.list_blobs(name_starts_with=prefix)}
    return sorted(every - committed)


def test_it_never_connects_when_built_and_gives_a_down_server_a_clear_message(server: AzuriteServer) -> None:
    port = free_port()  # nothing listens there
    store = AzureStorage(
        "offsite", azure_options(server, endpoint_url=f"http://127.0.0.1:{port}/{server.account}", retries=1)
    )
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        store.check_writable()
    assert str(caught.value) == (
        f"offsite: cannot write to http://127.0.0.1:{port}/{server.account}/{CONTAINER}: "
        f"cannot connect to http://127.0.0.1:{port}/{server.account}; is it up and reachable?"
    )
    assert time.monotonic() - started < 30
    writer = store.open_writer("a/b.bin")  # opening sends nothing either
    with pytest.raises(StorageError, match="cannot connect"):
        writer.write(b"x" * (2 * MIB))
    writer.abort()


def test_it_fails_a_connection_cut_mid_upload_leaves_no_object_and_sweeps_the_blocks(
    server: AzuriteServer,
) -> None:
    direct = make(server)
    with cuttable_proxy(server.host, server.port) as proxy:
        # The proxy keeps cutting every connection once its budget is spent: the link stays down
        # for the SDK's retries too.
        proxied = AzureStorage(
            "azure",
            azure_options(
                server, endpoint_url=f"http://{proxy.host}:{proxy.port}/{server.account}", retries=1
            ),
            prefix=direct.prefix,
        )
        proxy.cut_after(10 * MIB)
        writer = proxied.open_writer("db/cut.bin")
        block = os.urandom(MIB)
        with pytest.raises(StorageError) as caught:
            for _ in range(20):
                writer.write(block)
            writer.commit()
        writer.abort()  # cannot reach the server either: the staged blocks stay, invisible
        assert proxy.cuts >= 1 and proxy.upstream_bytes < 12 * MIB
    assert str(caught.value) == (
        f"azure: upload failed for {proxied.location('db/cut.bin')}: "
        f"the connection to {proxied.base_url} failed (ServiceResponseError)"
    )
    assert not direct.exists("db/cut.bin")
    assert list(direct.list_objects()) == []
    assert uncommitted(server, direct.prefix) == [f"{direct.prefix}/db/cut.bin"]
    assert direct.sweep_stale() == 0  # young: its writer may still be running
    assert direct.sweep_stale(timedelta(0)) == 1
    assert uncommitted(server, direct.prefix) == []


def test_it_retries_one_dropped_connection(server: AzuriteServer) -> None:
    direct = make(server)
    with cuttable_proxy(server.host, server.port) as proxy:
        proxied = AzureStorage(
            "azure",
            azure_options(server, endpoint_url=f"http://{proxy.host}:{proxy.port}/{server.account}"),
            prefix=direct.prefix,
        )
        writer = proxied.open_writer("db/retried.bin")
        block = os.urandom(MIB)
        for index in range(6):
            if index == 3:
                proxy.cut()  # drop whatever is open; new connections work
            writer.write(block)
        writer.commit()
    assert direct.digest("db/retried.bin")[0] == 6 * MIB


def test_it_removes_the_staged_blocks_on_abort(server: AzuriteServer) -> None:
    store = make(server)
    writer = store.open_writer("db/aborted.bin")
    writer.write(os.urandom(3 * MIB))
    assert uncommitted(server, store.prefix) == [f"{store.prefix}/db/aborted.bin"]
    writer.abort()
    assert uncommitted(server, store.prefix) == []


WORKER = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
from backups.storages.azure import AzureStorage
options, prefix = json.loads(sys.argv[1]), sys.argv[2]
writer = AzureStorage("azure", options, prefix=prefix).open_writer("db/killed.bin")
block = os.urandom(1024 * 1024)
for i in range(10_000):
    writer.write(block)
    if i == 3:  # blocks have been staged
        print("writing", flush=True)
"""


def test_it_leaves_only_uncommitted_blocks_of_a_killed_writer_for_a_sweep_to_remove(
    server: AzuriteServer,
) -> None:
    store = make(server)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(azure_options(server)), store.prefix],
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
    # A block upload the server had already received when the client died still completes
    # server-side; give it a moment, or it re-creates the uncommitted blob after the sweep.
    time.sleep(1.0)
    assert not store.exists("db/killed.bin")
    assert list(store.list_objects()) == []
    assert uncommitted(server, store.prefix) == [f"{store.prefix}/db/killed.bin"]
    assert store.sweep_stale() == 0  # younger than a day: maybe still running
    assert store.sweep_stale(timedelta(0)) == 1
    assert store.sweep_stale(timedelta(0)) == 0
    assert uncommitted(server, store.prefix) == []


def test_it_never_sweeps_a_committed_blob(server: AzuriteServer) -> None:
    store = make(server)
    store.put_bytes("db/kept.bin", b"kept")
    writer = store.open_writer("db/kept.bin")  # a failed overwrite leaves blocks on a real blob
    writer.write(os.urandom(2 * MIB))
    with pytest.raises(StorageError, match="already exists"):
        writer.commit()
    writer.abort()
    assert store.sweep_stale(timedelta(0)) == 0
    assert store.sweep_partials("db/kept.bin") == 0
    assert store.read_bytes("db/kept.bin") == b"kept"


def test_it_gives_a_wrong_account_key_a_clear_message_without_the_key(
    server: AzuriteServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = base64.b64encode(os.urandom(64)).decode()
    store = make(server, account_key=wrong, retries=0)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(StorageError) as caught:
            store.check_writable()
        with pytest.raises(StorageError, match="authentication failed"):
            store.put_bytes("a.bin", b"data")
    message = str(caught.value)
    assert message == (
        f"azure: cannot write to {server.endpoint}/{CONTAINER}: authentication failed (HTTP 403 "
        "AuthorizationFailure); check account_key, sas_token or connection_string"
    )
    for text in (message, repr(caught.value.args), caplog.text):
        assert wrong not in text
        assert wrong[:20] not in text


def test_it_keeps_a_wrong_sas_token_and_connection_string_out_of_messages_and_logs(
    server: AzuriteServer, caplog: pytest.LogCaptureFixture
) -> None:
    forged = generate_container_sas(
        server.account, CONTAINER, account_key=base64.b64encode(b"not the key" * 6).decode(),
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )  # fmt: skip
    signature = parse_qs(forged)["sig"][0]
    options = azure_options(server, sas_token=forged, retries=0)
    del options["account_key"]
    with caplog.at_level(logging.DEBUG), pytest.raises(StorageError, match="authentication failed") as caught:
        AzureStorage("azure", options).check_writable()
    for text in (str(caught.value), repr(caught.value.args), caplog.text):
        assert signature not in text
    wrong = server.connection_string().replace(server.key, base64.b64encode(os.urandom(64)).decode())
    options = {"connection_string": wrong, "container": CONTAINER, "retries": 0}
    with pytest.raises(StorageError, match="authentication failed") as caught:
        AzureStorage("azure", options).check_writable()
    assert "AccountKey" not in str(caught.value)
    assert str(caught.value).startswith(f"azure: cannot write to {server.endpoint}/{CONTAINER}:")


def test_it_works_with_a_connection_string_and_keeps_the_key_out_of_its_location(
    server: AzuriteServer,
) -> None:
    store = AzureStorage(
        "azure", {"connection_string": server.connection_string(), "container": CONTAINER}, "cs"
    )
    store.put_bytes("a.bin", b"via connection string")
    assert store.location("a.bin") == f"{server.endpoint}/{CONTAINER}/cs/a.bin"
    assert store.read_bytes("a.bin") == b"via connection string"
    store.delete("a.bin")


def test_it_names_a_missing_container(server: AzuriteServer) -> None:
    store = AzureStorage("azure", azure_options(server, container="no-such-container"))
    with pytest.raises(StorageError, match="container no-such-container does not exist"):
        store.check_writable()
    with pytest.raises(StorageError, match="container no-such-container does not exist"):
        store.put_bytes("x.bin", b"x")


def test_it_signs_a_read_only_url_that_expires_and_downloads(server: AzuriteServer) -> None:
    store = make(server)
    store.put_bytes("db/signed.bin", b"signed content")
    url = store.signed_url("db/signed.bin", 300)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert url.startswith(store.location("db/signed.bin") + "?")
    assert query["sp"] == ["r"]
    expiry = datetime.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((expiry - datetime.now(UTC)).total_seconds() - 300) < 30
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"signed content"
    with pytest.raises(urllib.error.HTTPError) as refused:  # read-only: no writes with it
        urllib.request.urlopen(
            urllib.request.Request(url, data=b"x", method="PUT", headers={"x-ms-blob-type": "BlockBlob"}),
            timeout=10,
        )
    assert refused.value.code == 403
    short = store.signed_url("db/signed.bin", 1)
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as expired:
        urllib.request.urlopen(short, timeout=10)
    assert expired.value.code == 403


def test_it_needs_the_account_key_to_sign(server: AzuriteServer) -> None:
    options = azure_options(server, sas_token="sv=2024-01-01&sig=abc")
    del options["account_key"]
    with pytest.raises(StorageError, match="needs account_key") as caught:
        AzureStorage("azure", options).signed_url("x.bin", 60)
    assert "sig=" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"account_name": "a", "account_key": "k"}, "container: required"),
        ({"container": "backups", "account_name": "a"}, "account_key: one of account_key, sas_token or"),
        ({"container": "backups", "account_key": "k"}, "account_name: required unless connection_string"),
        (
            {"container": "backups", "account_name": "a", "account_key": "k", "sas_token": "s"},
            "sas_token: set only one",
        ),
        ({"container": "ab", "account_name": "a", "account_key": "k"}, "container: must be 3-63 lowercase"),
        (
            {"container": "Backups", "account_name": "a", "account_key": "k"},
            "container: must be 3-63 lowercase",
        ),
        (
            {"container": "backups", "account_name": "a", "account_key": "k", "block_size_mib": 0},
            "block_size_mib: must be between",
        ),
        (
            {"container": "backups", "account_name": "a", "account_key": "k", "endpoint_url": "127.0.0.1:1"},
            "endpoint_url: must start",
        ),
        ({"container": "backups", "account_name": "a", "account_key": 5}, "account_key: must be a string"),
    ],
)
def test_it_names_the_option_of_an_option_problem(options: dict[str, object], named: str) -> None:
    with pytest.raises(StorageError, match=f"^offsite: .*{named}") as caught:
        build_storage("offsite", "azure", options)
    assert "'k'" not in str(caught.value)


def test_it_gives_the_public_blob_url_as_its_location(server: AzuriteServer) -> None:
    store = AzureStorage(
        "azure", {"account_name": "acme", "account_key": "a2V5", "container": "backups"}, "site"
    )
    assert store.location("db/a b.gz") == "https://acme.blob.core.windows.net/backups/site/db/a%20b.gz"
