"""Storages touch only what is theirs (issue 18): the leftover sweep removes only the names the
writers create and only under the storage's prefix; a prefix never leads out of a storage and a
local storage never holds BACKUPSITE_HOME (one rule in the admin, the TOML file and the build);
a stored object that is not a regular file (a FIFO) is refused at once by verify, restore,
download and reindex instead of blocking them forever; a download's storage error reaches the
browser as a short sentence, its detail redacted in the log."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from backups import catalog, services
from backups.config import loader as config
from backups.models import AuditEvent, Backup, BackupCopy, BackupStatus, BackupStep, Storage, Target
from backups.storages import LocalStorage, StorageError, build_storage
from backups.storages.base import is_partial, is_probe, partial_name
from backups.storages.local import _LocalWriter as LocalWriter
from backups.storages.sftp import SFTPStorage
from backups.tasks import sweep_leftovers
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.config_builder import toml_text
from tests.conftest import digest
from tests.servers.sshd import SSHServer

TWO_DAYS_AGO = time.time() - 2 * 86400
REAL = ".app-db-full-1.sqlite3.gz.partial-0123456789ab"  # what a writer names its temporary
LOOK_ALIKES = (
    ".notes.txt.partial-draft",  # someone else's file: the token is not a writer's
    ".app.gz.partial-0123456789ab.keep",  # a writer's name with something after it
    ".partial-0123456789ab",  # no object name before the marker
    ".app.gz.partial-0123456789AB",  # upper-case hex is never written
    ".backupsite-write-test-notmine1",  # a probe's prefix, not a probe's token
)


def age(path: Path) -> None:
    os.utime(path, (TWO_DAYS_AGO, TWO_DAYS_AGO))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_fifo())


# -- 1. the sweep ----------------------------------------------------------------------------------


def test_it_recognises_exactly_the_names_the_writers_create() -> None:
    assert is_partial(partial_name("app-db-full-1.sqlite3.gz", "0123456789ab"))
    assert is_partial(REAL)
    assert not any(is_partial(name) for name in LOOK_ALIKES)
    assert is_probe(".backupsite-write-test-0a1b2c3d") and not is_probe(LOOK_ALIKES[-1])


@pytest.mark.django_db
def test_it_sweeps_only_writer_leftovers_under_a_local_storages_prefix(tmp_path: Path) -> None:
    root = tmp_path / "disk"
    Storage.objects.create(name="site", kind="local", options={"path": str(root)}, prefix="site")
    storage = LocalStorage("site", {"path": str(root)}, prefix="site")
    writer = storage.open_writer("app-db/app-db-full-1.sqlite3.gz")  # a worker that died mid-write
    writer.write(b"half a backup")
    [leftover] = (root / "site" / "app-db").iterdir()
    age(leftover)
    young = storage.open_writer("app-db/app-db-full-2.sqlite3.gz")  # a writer still at work
    assert isinstance(young, LocalWriter)
    young.write(b"still going")
    outside = root / "other" / REAL  # the exact name, but outside the prefix
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"not ours")
    age(outside)
    for name in LOOK_ALIKES:
        (root / "site" / "app-db" / name).write_bytes(b"not ours either")
        age(root / "site" / "app-db" / name)
    linked = root / "site" / "app-db" / ".linked.gz.partial-0123456789ab"
    linked.symlink_to(outside)  # named like a leftover, but a symlink: never followed or removed
    os.utime(linked, (TWO_DAYS_AGO, TWO_DAYS_AGO), follow_symlinks=False)

    removed, errors = services.sweep_storages()
    assert not errors
    assert removed == ["storage site: removed 1 leftover upload(s) older than 1 day, 0:00:00"]
    assert not leftover.exists()
    assert young.temp.exists() and outside.exists() and linked.is_symlink()
    assert all((root / "site" / "app-db" / name).exists() for name in LOOK_ALIKES)
    young.abort()


@pytest.mark.django_db
def test_it_sweeps_stale_leftovers_in_the_periodic_task_and_logs_what_it_removed_and_what_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What beat's ``backupsite-sweep`` runs every 6 hours: the same sweep as ``backup_cleanup``."""
    root = tmp_path / "disk"
    Storage.objects.create(name="site", kind="local", options={"path": str(root)})
    # A row saved before prefixes were checked: reported by the sweep, never swept.
    Storage.objects.create(name="escaping", kind="local", options={"path": str(root)}, prefix="../etc")
    folder = root / "app-db"
    folder.mkdir(parents=True)
    stale, young = folder / REAL, folder / partial_name("app-db-full-2.sqlite3.gz", "ba9876543210")
    stale.write_bytes(b"half a backup")  # its worker died two days ago
    age(stale)
    young.write_bytes(b"still going")  # its writer may still be at work

    with caplog.at_level(logging.INFO, logger="backups.tasks"):
        sweep_leftovers.apply().get()

    assert not stale.exists() and young.exists()
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "backups.tasks"]
    assert logged[0] == (
        "INFO",
        "sweep of upload leftovers: storage site: removed 1 leftover upload(s) older than 1 day, 0:00:00",
    )
    assert [level for level, _ in logged[1:]] == ["ERROR"]
    assert "storage escaping:" in logged[1][1] and "must not contain '..'" in logged[1][1]


def sftp_storage(server: SSHServer, root: Path, tmp_path: Path, prefix: str = "") -> SFTPStorage:
    options = server.options(
        str(root), host_key_fingerprint=None, known_hosts=str(server.known_hosts(tmp_path / "known_hosts"))
    )
    return SFTPStorage("offsite", options, prefix=prefix)


def test_it_sweeps_only_writer_leftovers_under_an_sftp_storages_prefix(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    """Everything is written as the login user (through the server), so what survives survives
    because the sweep left it alone, not because it could not delete it."""
    root = sshd_server.fresh_dir("sweep")
    whole = sftp_storage(sshd_server, root, tmp_path)  # the login's directory, no prefix
    site = sftp_storage(sshd_server, root, tmp_path, prefix="site")
    try:
        writer = site.open_writer("app-db/app-db-full-1.sqlite3.gz")
        writer.write(b"half a backup")  # never committed: its worker died
        writer.handle.close()  # type: ignore[attr-defined]
        look_alikes = [f"site/app-db/{name}" for name in LOOK_ALIKES]
        outside = f"other/{REAL}"  # a writer's name, but outside the prefix
        for path in [outside, *look_alikes]:
            whole.put_bytes(path, b"not ours")
        client = whole.client()
        for remote in [writer.temp, *(str(root / path) for path in [outside, *look_alikes])]:  # type: ignore[attr-defined]
            client.utime(remote, (TWO_DAYS_AGO, TWO_DAYS_AGO))

        assert site.sweep_stale() == 1  # the dead writer's temporary, nothing else
        assert files_under(root) == sorted([outside, *look_alikes])
        # Without a prefix the storage is the whole directory (by default the login's home):
        # still only a writer's exact name goes, every look-alike stays.
        assert whole.sweep_stale() == 1
        assert files_under(root) == sorted(look_alikes)
    finally:
        whole.close()
        site.close()


@pytest.mark.parametrize("kind", ["sftp", "ftp"])
def test_it_removes_only_the_writers_temporaries_of_the_object_it_sweeps_for(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A run's own sweep (before it writes ``NAME``) removes ``.NAME.partial-TOKEN`` and nothing
    that merely starts like it."""
    if kind == "sftp":
        server: Any = request.getfixturevalue("sshd_server")
        storage: Any = sftp_storage(server, server.fresh_dir("own-sweep"), tmp_path)
    else:
        server = request.getfixturevalue("ftp_server")
        storage = build_storage("remote", "ftp", server.options(root=request.getfixturevalue("ftp_root")))
    name = "app-db-full-1.sqlite3.gz"
    mine = f"app-db/{partial_name(name, '0123456789ab')}"
    others = [
        f"app-db/.{name}.partial-draft",
        f"app-db/.{name}.partial-0123456789ab.keep",
        f"app-db/.{name}x.partial-0123456789ab",
    ]
    try:
        for path in [mine, *others]:
            storage.put_bytes(path, b"x")
        assert storage.sweep_partials(f"app-db/{name}") == 1
        assert not storage.exists(mine)
        assert [path for path in others if not storage.exists(path)] == []
    finally:
        storage.close()


# -- 2. the prefix and the local path ----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["..", "../elsewhere", "site/../../etc", "a/..", "x\ny"])
def test_it_refuses_a_prefix_that_leads_out_of_the_storage_when_building_it(
    tmp_path: Path, prefix: str
) -> None:
    with pytest.raises(StorageError, match="prefix: must not contain"):
        build_storage("site", "local", {"path": str(tmp_path)}, prefix)


ADMIN_FORM = {"name": "site", "kind": "local", "required": "on"}


def post_storage(admin_client: Any, options: str, prefix: str = "") -> str:
    response = admin_client.post(
        "/admin/backups/storage/add/", {**ADMIN_FORM, "options": options, "prefix": prefix}
    )
    return "" if response.status_code == 302 else response.content.decode()


@pytest.mark.django_db
def test_it_refuses_a_prefix_with_dot_dot_in_the_admin_as_in_the_toml_file(
    admin_client: Any, tmp_path: Path
) -> None:
    options = f'{{"path": "{tmp_path / "disk"}"}}'
    page = post_storage(admin_client, options, prefix="site/../../etc")
    assert "must not contain &#x27;..&#x27;: write a folder inside the storage" in page
    assert not Storage.objects.exists()

    (tmp_path / "c.toml").write_text(
        toml_text(storages={"site": {"kind": "local", "path": str(tmp_path / "disk"), "prefix": "../etc"}})
    )
    with pytest.raises(config.ConfigInvalid) as caught:
        config.apply(config.load(tmp_path / "c.toml"), probe=False)
    assert any(
        "storages.site.prefix" in error and "must not contain '..': write a folder inside" in error
        for error in caught.value.errors
    ), caught.value.errors

    assert post_storage(admin_client, options, prefix="site/production") == ""
    assert Storage.objects.get(name="site").prefix == "site/production"


@pytest.mark.django_db
def test_it_refuses_a_local_storage_that_is_or_holds_backupsite_home(
    admin_client: Any, tmp_path: Path
) -> None:
    home = Path(settings.BACKUPSITE_HOME)
    for path in (home, home.parent, Path(str(home) + "/./")):
        page = post_storage(admin_client, f'{{"path": "{path}"}}')
        assert "path: " in page and "BACKUPSITE_HOME" in page and "use a directory of its own" in page
        (tmp_path / "c.toml").write_text(toml_text(storages={"site": {"kind": "local", "path": str(path)}}))
        with pytest.raises(config.ConfigInvalid) as caught:
            config.apply(config.load(tmp_path / "c.toml"), probe=False)
        assert any("storages.site.path" in e and "BACKUPSITE_HOME" in e for e in caught.value.errors)
    assert not Storage.objects.exists()

    inside = home / "backups"  # where the demo keeps them: the catalog is not in there
    assert post_storage(admin_client, f'{{"path": "{inside}"}}') == ""
    assert Storage.objects.get(name="site").options["path"] == str(inside)


# -- 4. not a regular file ----------------------------------------------------------------------


@contextlib.contextmanager
def unblocking(*fifos: Path, after: float = 10.0) -> Iterator[list[Path]]:
    """If a reader is still blocked opening one of ``fifos`` after ``after`` seconds, open its
    other end so the test fails instead of hanging; yields the FIFOs it had to unblock."""
    fired: list[Path] = []
    stop = threading.Event()

    def watch() -> None:
        if stop.wait(after):
            return
        while not stop.is_set():
            for fifo in fifos:
                with contextlib.suppress(OSError):  # ENXIO: nobody is reading it
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    fired.append(fifo)
            stop.wait(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        stop.set()
        thread.join()


def fifo_in_place_of(path: Path) -> Path:
    path.unlink()
    os.mkfifo(path)
    return path


@pytest.fixture
def fifo_backup(sqlite_target: Target, storage_dir: Path) -> tuple[Backup, Path]:
    backup = services.run_backup(sqlite_target)
    return backup, fifo_in_place_of(storage_dir / backup.file_path)


@pytest.mark.django_db
def test_it_marks_a_backup_corrupt_when_its_stored_file_is_a_fifo(fifo_backup: tuple[Backup, Path]) -> None:
    backup, fifo = fifo_backup
    out = StringIO()
    with unblocking(fifo) as fired, pytest.raises(CommandError) as caught:
        call_command("backup_verify", "--id", str(backup.pk), stdout=out)
    assert not fired, "backup_verify blocked on the FIFO"
    assert caught.value.returncode == 1
    assert "is a FIFO, not a regular file" in out.getvalue()
    backup.refresh_from_db()
    assert backup.status == BackupStatus.CORRUPT and not backup.verified
    assert "not a regular file" in backup.error_message


@pytest.mark.django_db
def test_it_refuses_to_restore_from_a_fifo_before_touching_the_destination(
    fifo_backup: tuple[Backup, Path], copy_target: Target
) -> None:
    backup, fifo = fifo_backup
    destination = Path(copy_target.database)
    before = digest(destination)
    with unblocking(fifo) as fired:
        log = restore_backup(backup, copy_target)
    assert not fired, "the restore blocked on the FIFO"
    assert log.status == RestoreStatus.FAILED
    assert "the destination was not touched" in log.error_message
    assert "is a FIFO, not a regular file" in log.error_message
    assert digest(destination) == before


@pytest.mark.django_db
def test_it_skips_a_fifo_manifest_or_backup_file_on_reindex_and_indexes_the_rest(
    sqlite_target: Target, local_storage: Storage, storage_dir: Path
) -> None:
    fifo_manifest, fifo_file, good = (services.run_backup(sqlite_target) for _ in range(3))
    BackupStep.objects.all().delete()
    BackupCopy.objects.all().delete()
    Backup.objects.all().delete()
    manifest = fifo_in_place_of(storage_dir / (fifo_manifest.file_path + ".manifest.json"))
    data = fifo_in_place_of(storage_dir / fifo_file.file_path)
    with unblocking(manifest, data) as fired:
        report = catalog.reindex_storage(local_storage)
    assert not fired, "reindex blocked on a FIFO"
    assert report.skipped == [
        f"{fifo_manifest.file_path}.manifest.json: not a readable Backupsite manifest "
        f"(local: {manifest} is a FIFO, not a regular file; a backup is always a regular file, so "
        "something else was put in its place)",
        f"{fifo_file.file_path}.manifest.json: {fifo_file.file_path}: 0 bytes in storage, "
        f"the manifest says {fifo_file.file_size}",
    ]
    assert list(Backup.objects.values_list("pk", flat=True)) == [good.pk]


# -- 5. download errors ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_a_failed_download_briefly_and_logs_the_detail_redacted(
    admin_client: Any, sqlite_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    hidden = tmp_path / "vault-9f2c71d4e8"  # the directory's name is the secret here
    monkeypatch.setenv("TEST_DOWNLOAD_DIR", str(hidden))
    storage = Storage.objects.create(name="vault", kind="local", options={"path": "${TEST_DOWNLOAD_DIR}"})
    target = Target.objects.create(name="app-db", engine="sqlite", database=str(sqlite_source))
    target.storages.add(storage)
    backup = services.run_backup(target)
    fifo = fifo_in_place_of(hidden / backup.file_path)

    with unblocking(fifo) as fired, caplog.at_level(logging.WARNING, logger="backups.views.downloads"):
        response = admin_client.get(f"/backups/{backup.pk}/download/")
    assert not fired
    assert response.status_code == 502
    page = response.content.decode()
    assert (
        page
        == f"Backup {backup.pk} cannot be read from its storage right now. The details are in the server log."
    )
    [line] = [r.getMessage() for r in caplog.records if r.name == "backups.views.downloads"]
    assert line.startswith(f"download of backup {backup.pk} (target app-db) failed: vault: ")
    assert "is a FIFO, not a regular file" in line and str(hidden) not in line
    event = AuditEvent.objects.filter(action="backup.download").latest("pk")
    assert event.outcome == "failure" and str(hidden) not in str(event.details)
