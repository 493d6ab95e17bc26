"""Local storage: atomic writers, no overwrites, path safety, plain error messages."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from backups.storages import (
    PARTIAL_MARKER,
    LocalStorage,
    StorageError,
    StoredObject,
    build_storage,
)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage("local", {"path": str(tmp_path / "store")})


def listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


def test_it_shows_only_a_hidden_partial_file_until_commit(storage: LocalStorage) -> None:
    writer = storage.open_writer("app/backup-1.sqlite3.gz")
    writer.write(b"first half ")
    writer.write(b"second half")
    folder = storage.root / "app"
    names = os.listdir(folder)
    assert len(names) == 1
    assert names[0].startswith(f".backup-1.sqlite3.gz{PARTIAL_MARKER}")
    assert not storage.exists("app/backup-1.sqlite3.gz")

    stored = writer.commit()

    assert os.listdir(folder) == ["backup-1.sqlite3.gz"]
    final = folder / "backup-1.sqlite3.gz"
    assert final.read_bytes() == b"first half second half"
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert stored == StoredObject(path=str(final), size=22)
    assert storage.exists("app/backup-1.sqlite3.gz")
    assert storage.size("app/backup-1.sqlite3.gz") == 22


def test_it_creates_the_partial_file_private_from_the_start(storage: LocalStorage) -> None:
    writer = storage.open_writer("x.bin")
    try:
        (partial,) = storage.root.iterdir()
        assert stat.S_IMODE(partial.stat().st_mode) == 0o600
    finally:
        writer.abort()


def test_it_writes_large_payloads_completely(storage: LocalStorage) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    writer = storage.open_writer("big.bin")
    for start in range(0, len(payload), 1_000_003):
        writer.write(payload[start : start + 1_000_003])
    assert writer.commit().size == len(payload)
    with storage.open_reader("big.bin") as handle:
        assert handle.read() == payload


def test_it_removes_the_partial_file_on_abort(storage: LocalStorage) -> None:
    writer = storage.open_writer("app/aborted.bin")
    writer.write(b"never to be seen")
    writer.abort()
    writer.abort()  # safe to call twice
    assert os.listdir(storage.root / "app") == []
    assert not storage.exists("app/aborted.bin")


def test_it_refuses_to_overwrite_an_existing_object(storage: LocalStorage) -> None:
    storage.put_bytes("app/one.bin", b"original")
    writer = storage.open_writer("app/one.bin")
    writer.write(b"impostor")
    with pytest.raises(StorageError, match="already exists"):
        writer.commit()
    writer.abort()  # safe after a failed commit
    assert (storage.root / "app" / "one.bin").read_bytes() == b"original"
    assert os.listdir(storage.root / "app") == ["one.bin"]


def test_it_leaves_no_partial_file_when_put_bytes_fails(storage: LocalStorage) -> None:
    storage.put_bytes("one.bin", b"original")
    with pytest.raises(StorageError, match="not overwriting"):
        storage.put_bytes("one.bin", b"second")
    assert listing(storage.root) == ["one.bin"]
    assert (storage.root / "one.bin").read_bytes() == b"original"


def test_it_reads_back_what_was_written(storage: LocalStorage) -> None:
    storage.put_bytes("a/b/c.txt", b"content")
    with storage.open_reader("a/b/c.txt") as handle:
        assert handle.read() == b"content"
    assert storage.location("a/b/c.txt") == str(storage.root / "a" / "b" / "c.txt")


def test_it_reports_a_missing_object_on_read(storage: LocalStorage) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        storage.open_reader("nope.bin")
    with pytest.raises(StorageError, match="cannot stat"):
        storage.size("nope.bin")
    assert not storage.exists("nope.bin")


def test_it_deletes_an_object(storage: LocalStorage) -> None:
    storage.put_bytes("gone.bin", b"x")
    storage.delete("gone.bin")
    assert not storage.exists("gone.bin")


def test_it_does_not_fail_deleting_a_missing_object(storage: LocalStorage) -> None:
    storage.delete("never-existed.bin")
    storage.delete("no/such/folder/file.bin")


@pytest.mark.parametrize("path", ["../escape.bin", "a/../../escape.bin", "a/../b", "/etc/passwd", "", "."])
def test_it_rejects_escaping_or_empty_keys(storage: LocalStorage, path: str) -> None:
    with pytest.raises(StorageError, match="invalid object path"):
        storage.key(path)
    with pytest.raises(StorageError):
        storage.open_writer(path)
    assert not (storage.root.parent / "escape.bin").exists()


def test_it_prefixes_keys() -> None:
    storage = LocalStorage("local", {"path": "/srv/backups"}, prefix="/nightly/")
    assert storage.key("app/x.gz") == "nightly/app/x.gz"
    assert LocalStorage("local", {"path": "/srv/backups"}).key("app/x.gz") == "app/x.gz"


def test_it_writes_under_the_prefix(tmp_path: Path) -> None:
    storage = LocalStorage("local", {"path": str(tmp_path / "store")}, prefix="nightly")
    storage.put_bytes("app/x.gz", b"data")
    assert (tmp_path / "store" / "nightly" / "app" / "x.gz").read_bytes() == b"data"


def test_it_needs_a_path_option() -> None:
    with pytest.raises(StorageError, match=r"^local: path: required: the directory that holds the backups$"):
        LocalStorage("local", {})
    with pytest.raises(
        StorageError, match=r"^local: colour: unknown option for the local storage kind; known: path$"
    ):
        LocalStorage("local", {"path": "/srv", "colour": "blue"})


def test_it_creates_a_missing_directory_when_checking_writability(tmp_path: Path) -> None:
    storage = LocalStorage("local", {"path": str(tmp_path / "new" / "dir")})
    storage.check_writable()
    assert (tmp_path / "new" / "dir").is_dir()
    assert os.listdir(tmp_path / "new" / "dir") == []  # the probe file is gone


def test_it_reports_a_directory_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    storage = LocalStorage("local", {"path": str(blocker / "sub")})
    with pytest.raises(StorageError) as caught:
        storage.check_writable()
    message = str(caught.value)
    assert message.startswith("local: ")
    assert str(blocker / "sub") in message
    assert "Not a directory" in message
    assert "Errno" not in message and "Traceback" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits, so chmod cannot block writes")
def test_it_reports_a_read_only_directory(tmp_path: Path) -> None:
    root = tmp_path / "read-only"
    root.mkdir()
    root.chmod(0o500)
    try:
        storage = LocalStorage("local", {"path": str(root)})
        with pytest.raises(StorageError, match="is not writable: Permission denied"):
            storage.check_writable()
    finally:
        root.chmod(0o700)


def test_it_reports_a_storage_path_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "plain-file"
    path.write_text("x")
    storage = LocalStorage("local", {"path": str(path)})
    with pytest.raises(StorageError, match=r"^local: .*plain-file exists but is not a directory$"):
        storage.check_writable()


def test_it_builds_a_local_storage() -> None:
    storage = build_storage("main", "local", {"path": "/srv/backups"}, prefix="p")
    assert isinstance(storage, LocalStorage)
    assert (storage.name, storage.prefix, storage.root) == ("main", "p", Path("/srv/backups"))


def test_it_refuses_an_unknown_storage_kind() -> None:
    with pytest.raises(StorageError, match="unknown storage kind 'floppy'"):
        build_storage("main", "floppy", {})
