"""Storages failing (issue 18, fault suite case 2), for every remote kind: the storage down when a
run starts, the link cut mid-upload, the link stalled mid-upload (no byte either way).

Each kind's real server (moto's S3, OpenSSH's sshd, pyftpdlib's FTPS, the GCS emulator, Azurite)
is reached through the suite's TCP proxy (``tests/servers/proxy.py``), which goes down, cuts or
stalls on demand; a direct view of the same storage, around the proxy, shows what a failed run
left. FTP moves its bytes on passive data connections of their own, so its link is a proxy for
the control port and one for each passive port, listening on 127.0.0.2: ftplib connects to the
control connection's address (it ignores the one a PASV reply names), so the data goes through
the proxies too.

Every case runs under a watchdog (:func:`watchdog`): a hang fails the test after
:data:`WATCHDOG` seconds instead of blocking the suite. The local kind's faults (a full disk, an
unwritable directory) are in tests/test_copies.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from backups import services
from backups.models import Backup, BackupStatus, CopyStatus, Storage, Target
from backups.storages import STORAGE_KINDS, BackupStorage, StorageError
from backups.storages.azure import AzureStorage
from backups.storages.base import is_partial
from backups.storages.ftp import FTPStorage
from backups.storages.gcs import GCSStorage
from backups.storages.s3 import S3Storage
from backups.storages.sftp import SFTPStorage
from tests.conftest import fill_sqlite
from tests.plugins.azure import azure_options
from tests.plugins.gcs import gcs_options
from tests.servers.azurite import AzuriteServer
from tests.servers.ftp import FTPServer
from tests.servers.gcs import GCSServer
from tests.servers.proxy import CuttableProxy
from tests.servers.s3 import S3Server
from tests.servers.sshd import SSHServer

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
KINDS = ("s3", "sftp", "ftp", "gcs", "azure")
TIMEOUT = 2  # every storage's timeout_seconds (and connect_timeout) here; production's are 60-120
WATCHDOG = 60  # seconds after which a case counts as hung
# A stalled run waits out a few timeouts: the request that stalled, then the abort of the partial
# upload over the same dead link. S3 is the longest: botocore tries each 3 times (after the
# first, each try also waits 1 s for a "100 Continue"), with back-offs of up to 1 and 2 s.
STALL_BOUND = 10 * TIMEOUT + 10
# A refused connection is no timeout: each of a required storage's three probes (the test
# settings' retry delays) fails at once, after the client's own retries and their back-offs
# (botocore's up to 1 + 2 s, Azure's 2 +- 1 s, GCS's until timeout_seconds): 9 s at worst.
DOWN_BOUND = 15
FAILED_COPY = ("every copy failed: offsite: ", "no copy was stored and confirmed: offsite: ")
UNLISTABLE = {
    "gcs": (
        "an unfinished resumable upload session is no object and cannot be listed by any GCS API "
        "(it expires at Google a week after creation): what is left cannot be shown here, only "
        "that no object appeared (tests/plugins/gcs.py CANNOT says the same for the contract)"
    ),
}


class Hung(BaseException):
    """Raised by the watchdog. A BaseException, so no ``except Exception`` on the way swallows it."""


@contextlib.contextmanager
def watchdog(seconds: float = WATCHDOG) -> Iterator[None]:
    """Fail, not block, a case that hangs. SIGALRM interrupts whatever the test's thread waits in
    (a socket, a lock, a queue); the handler raises :class:`Hung` there."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"no outcome within {seconds} s: the run hangs")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Link:
    """The proxies between the storage and its server, driven as one link (one proxy, or FTP's
    control port and every passive data port)."""

    def __init__(self, proxies: list[CuttableProxy]) -> None:
        self.proxies = proxies

    @property
    def port(self) -> int:
        return self.proxies[0].port

    @property
    def host(self) -> str:
        return self.proxies[0].host

    @property
    def cuts(self) -> int:
        return sum(proxy.cuts for proxy in self.proxies)

    @property
    def upstream_bytes(self) -> int:
        return sum(proxy.upstream_bytes for proxy in self.proxies)

    def down(self) -> None:
        for proxy in self.proxies:
            proxy.down()

    def cut(self) -> None:
        for proxy in self.proxies:
            proxy.cut()

    def cut_after(self, upstream_bytes: int) -> None:
        for proxy in self.proxies:  # each proxy counts its own: the upload's data connection cuts
            proxy.cut_after(upstream_bytes)

    def stall(self) -> None:
        for proxy in self.proxies:
            proxy.stall()

    def small_buffers(self, size: int) -> None:
        for proxy in self.proxies:
            proxy.small_buffers(size)

    def allow(self) -> None:
        for proxy in self.proxies:
            proxy.allow()

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()


@dataclass
class Remote:
    """One remote storage: the Storage row a run uses (through the link) and a direct view of the
    same place, to see what the run left."""

    kind: str
    row: Storage
    link: Link
    direct: BackupStorage
    leftovers: Callable[[], list[str]] | None  # unfinished uploads, for kinds that can list them


def new_prefix() -> str:
    return f"faults-{uuid.uuid4().hex[:8]}"


def storage_row(kind: str, options: dict[str, Any], prefix: str) -> Storage:
    return Storage.objects.create(name="offsite", kind=kind, options=options, prefix=prefix, required=True)


def s3_remote(request: pytest.FixtureRequest) -> Remote:
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")()
    link = Link([CuttableProxy(server.host, server.port)])
    options = server.options(
        bucket, endpoint_url=f"http://{link.host}:{link.port}", part_size_mib=5, timeout_seconds=TIMEOUT
    )
    prefix = new_prefix()

    def uploads() -> list[str]:
        listed = server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [upload["Key"] for upload in listed]

    direct = S3Storage("direct", server.options(bucket), prefix=prefix)
    return Remote("s3", storage_row("s3", options, prefix), link, direct, uploads)


def sftp_remote(request: pytest.FixtureRequest) -> Remote:
    server: SSHServer = request.getfixturevalue("sshd_server")
    root = server.fresh_dir("faults")
    link = Link([CuttableProxy(server.host, server.port)])
    options = server.options(str(root), port=link.port, connect_timeout=TIMEOUT, timeout_seconds=TIMEOUT)
    direct = SFTPStorage("direct", server.options(str(root)), prefix="site")
    return Remote("sftp", storage_row("sftp", options, "site"), link, direct, lambda: partials_under(root))


def passive_ports(server: FTPServer) -> list[int]:
    """The server's passive data ports (chosen when it started; its command line names them)."""
    argv = server.process.args
    assert isinstance(argv, list)  # running_ftp starts it from an argument list
    return [int(port) for port in argv[argv.index("--passive") + 1].split(",")]


def ftp_remote(request: pytest.FixtureRequest) -> Remote:
    server: FTPServer = request.getfixturevalue("ftp_server")
    root = request.getfixturevalue("ftp_root")
    control = CuttableProxy(server.host, server.port, listen_host="127.0.0.2")
    data = [CuttableProxy(server.host, port, "127.0.0.2", port) for port in passive_ports(server)]
    link = Link([control, *data])
    # TLS all the same, but unverified: the test CA's certificate names 127.0.0.1, not 127.0.0.2.
    options = server.options(
        root,
        host=link.host,
        port=link.port,
        verify_tls=False,
        connect_timeout=TIMEOUT,
        timeout_seconds=TIMEOUT,
    )
    direct = FTPStorage("direct", server.options(root), prefix="site")
    files = server.home / root.lstrip("/")
    return Remote("ftp", storage_row("ftp", options, "site"), link, direct, lambda: partials_under(files))


def gcs_remote(request: pytest.FixtureRequest) -> Remote:
    server: GCSServer = request.getfixturevalue("gcs_server")
    link = Link([CuttableProxy(server.host, server.port)])
    options = gcs_options(
        server, endpoint_url=f"http://{link.host}:{link.port}", chunk_size_mib=1, timeout_seconds=TIMEOUT
    )
    prefix = new_prefix()
    direct = GCSStorage("direct", gcs_options(server), prefix=prefix)
    return Remote("gcs", storage_row("gcs", options, prefix), link, direct, None)


def azure_remote(request: pytest.FixtureRequest) -> Remote:
    server: AzuriteServer = request.getfixturevalue("azurite_server")
    link = Link([CuttableProxy(server.host, server.port)])
    options = azure_options(
        server, endpoint_url=f"http://{link.host}:{link.port}/{server.account}", timeout_seconds=TIMEOUT,
        retries=1,
    )  # fmt: skip
    prefix = new_prefix()
    direct = AzureStorage("direct", azure_options(server), prefix=prefix)

    def uncommitted() -> list[str]:
        with BlobServiceClient.from_connection_string(server.connection_string()) as client:
            container = client.get_container_client(options["container"])
            committed = {blob.name for blob in container.list_blobs(name_starts_with=f"{prefix}/")}
            listed = container.list_blobs(name_starts_with=f"{prefix}/", include=["uncommittedblobs"])
            return [blob.name for blob in listed if blob.name not in committed]

    return Remote("azure", storage_row("azure", options, prefix), link, direct, uncommitted)


BUILDERS: dict[str, Callable[[pytest.FixtureRequest], Remote]] = {
    "s3": s3_remote,
    "sftp": sftp_remote,
    "ftp": ftp_remote,
    "gcs": gcs_remote,
    "azure": azure_remote,
}


def partials_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if is_partial(path.name))


@pytest.fixture(params=KINDS)
def remote(request: pytest.FixtureRequest) -> Iterator[Remote]:
    built = BUILDERS[request.param](request)
    try:
        yield built
    finally:
        built.link.close()
        built.direct.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """~12 MiB of incompressible rows: several parts, chunks and blocks of every kind."""
    path = fill_sqlite(tmp_path / "big.sqlite3", rows=10)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE blobs (data BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(256 * 1024),) for _ in range(48)])
        conn.commit()
    return path


def target_on(remote: Remote, source: Path) -> Target:
    target = Target.objects.create(name="app-db", engine="sqlite", database=str(source), compression="none")
    target.storages.add(remote.row)
    return target


def timed_run(target: Target) -> tuple[Backup, float]:
    started = time.monotonic()
    with watchdog():
        backup = services.run_backup(target)
    return backup, time.monotonic() - started


def assert_nothing_stored(remote: Remote) -> None:
    """No object under the prefix: neither a backup nor its manifest (looked at directly)."""
    assert [stored.path for stored in remote.direct.list_objects()] == []


def assert_leftovers_swept(remote: Remote) -> None:
    """Whatever unfinished upload the failed run could not abort goes with the next sweep."""
    assert remote.leftovers is not None or remote.kind in UNLISTABLE
    left = remote.leftovers() if remote.leftovers is not None else []
    removed, errors = services.sweep_storages(timedelta(0))
    assert not errors
    assert bool(removed) == bool(left), (left, removed)
    assert remote.leftovers is None or remote.leftovers() == []


def test_it_covers_every_remote_storage_kind() -> None:
    assert set(KINDS) == set(STORAGE_KINDS) - {"local"}


def test_it_fails_before_the_dump_and_at_once_when_a_required_storage_is_down_at_start(
    remote: Remote, source: Path
) -> None:
    remote.link.down()
    backup, elapsed = timed_run(target_on(remote, source))
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith("offsite: "), backup.error_message
    assert any(
        words in backup.error_message for words in ("cannot connect", "cannot reach", "could not be reached")
    ), backup.error_message
    assert elapsed < DOWN_BOUND, f"{remote.kind}: {elapsed:.1f} s"
    assert list(backup.steps.values_list("name", flat=True)) == ["validate"]  # no dump
    remote.link.allow()
    assert_nothing_stored(remote)


def test_it_fails_the_run_and_leaves_no_backup_when_the_link_is_cut_mid_upload(
    remote: Remote, source: Path
) -> None:
    remote.link.cut_after(2 * MIB)  # the probes pass; the upload is cut a few MiB in
    backup, elapsed = timed_run(target_on(remote, source))
    assert remote.link.cuts >= 1
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith(FAILED_COPY), backup.error_message
    assert {copy.status for copy in backup.copies.all()} == {CopyStatus.FAILED}
    assert elapsed < STALL_BOUND, f"{remote.kind}: {elapsed:.1f} s"
    remote.link.allow()
    assert_nothing_stored(remote)
    assert_leftovers_swept(remote)


@contextlib.contextmanager
def stalling_once_uploading(link: Link, after: int) -> Iterator[None]:
    """Stall the link once ``after`` more bytes went upstream (the run's upload under way)."""
    start, finished = link.upstream_bytes, threading.Event()

    def watch() -> None:
        while link.upstream_bytes - start < after:
            if finished.wait(0.001):
                return
        link.stall()

    thread = threading.Thread(target=watch, daemon=True, name="stall-link")
    thread.start()
    try:
        yield
    finally:
        finished.set()
        thread.join()


def test_it_fails_the_run_within_its_timeouts_when_the_link_stalls_mid_upload(
    remote: Remote, source: Path
) -> None:
    remote.link.small_buffers(64 * 1024)  # as on a real link: the senders block soon
    with stalling_once_uploading(remote.link, 2 * MIB):
        backup, elapsed = timed_run(target_on(remote, source))
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith(FAILED_COPY), backup.error_message
    assert any(words in backup.error_message for words in ("stalled: ", "timed out: ")), backup.error_message
    assert f" {TIMEOUT} s" in backup.error_message
    assert elapsed < STALL_BOUND, f"{remote.kind}: {elapsed:.1f} s"
    # The hung connections die (a request held in the link must not land after the sweep); the
    # GCS emulator serves one request at a time, so nothing can be looked at before this.
    remote.link.cut()
    remote.link.allow()
    assert_nothing_stored(remote)
    assert_leftovers_swept(remote)


def test_it_ends_an_sftp_write_the_stalled_link_stopped_taking(sshd_server: SSHServer) -> None:
    """paramiko retries a socket send that timed out for as long as its transport is open, and the
    channel's timeout covers only waiting for SSH window: with the link's buffers full before the
    window is used up (a real slow link, here 4 KiB buffers), a write would wait forever. The
    storage's stall guard ends it after timeout_seconds."""
    root = sshd_server.fresh_dir("guard")
    proxy = CuttableProxy(sshd_server.host, sshd_server.port)
    proxy.small_buffers(4096)
    options = sshd_server.options(
        str(root), port=proxy.port, connect_timeout=TIMEOUT, timeout_seconds=TIMEOUT
    )
    storage = SFTPStorage("vault", options)
    block = os.urandom(MIB)
    try:
        writer = storage.open_writer("app/stalled.bin")
        proxy.stall()
        started = time.monotonic()
        with watchdog(), pytest.raises(StorageError, match=f"stalled: it took no bytes for {TIMEOUT} s"):
            for _ in range(64):
                writer.write(block)
        assert time.monotonic() - started < 2 * TIMEOUT + 2
        with watchdog():
            writer.abort()  # cannot reconnect over the hung link: the temporary stays for a sweep
    finally:
        proxy.close()
        storage.close()
    direct = SFTPStorage("direct", sshd_server.options(str(root)))
    assert [stored.path for stored in direct.list_objects()] == []
    assert direct.sweep_stale(timedelta(0)) == 1
    direct.close()
