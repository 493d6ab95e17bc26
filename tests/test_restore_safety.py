"""Issue 18: the restore paths of the SQLite and files engines on real files, real processes and a
real (tiny) filesystem: modes and owners restored exactly, the previous SQLite file kept aside, a
destination in use or not a regular file refused, paths no restore accepts refused at config
time, and an error midway leaving the destination as it was.

Nothing here restores into /dev/null: the refusal of device destinations is tested on a fifo and
a character device made in tmp_path; /dev/null itself only meets the checks that cannot write.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from django.core.management import CommandError, call_command

from backups import services
from backups.engines import EngineError
from backups.engines import sqlite as sqlite_engine
from backups.engines.base import ChainLink, Connection, DumpOptions, RestoreOptions, RestoreResult
from backups.engines.files.engine import FilesEngine
from backups.engines.sqlite import SQLiteEngine
from backups.models import Target
from restores.models import RestoreLog
from tests.conftest import fill_sqlite, sqlite_rows

files = FilesEngine()
sqlite = SQLiteEngine()
AS_ROOT = os.geteuid() == 0


# -- helpers ---------------------------------------------------------------------------------------


def files_connection(*paths: Path | str) -> Connection:
    return Connection(name="files", engine="files", paths=tuple(str(p) for p in paths))


def sqlite_connection(path: Path | str) -> Connection:
    return Connection(name="db", engine="sqlite", database=str(path))


def dump_tree(*roots: Path, previous: dict[str, Any] | None = None) -> tuple[bytes, dict[str, Any]]:
    options = DumpOptions(backup_type="incremental" if previous else "full", previous=previous)
    with files.dump(files_connection(*roots), options) as dump:
        data = dump.stream.read()
    # Through JSON, as the manifest carries it.
    return data, json.loads(json.dumps(dump.info))


def restore_tree(data: bytes, info: dict[str, Any], destination: Path) -> RestoreResult:
    return files.restore(
        files_connection(destination), io.BytesIO(data), RestoreOptions(manifest={"engine_info": info})
    )


def link(data: bytes, info: dict[str, Any]) -> ChainLink:
    def feed(consume: Callable[[BinaryIO], str]) -> str:
        return consume(io.BytesIO(data))

    return ChainLink(manifest={"engine_info": info}, feed=feed)


def attributes(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` (itself as "."), with its type, permission bits, owner and
    content (file bytes, symlink target)."""
    entries: dict[str, tuple[Any, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(path)
        relative = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            content: object = os.readlink(path)
        elif stat.S_ISDIR(st.st_mode):
            content = None
        else:
            content = path.read_bytes()
        entries[relative] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content)
    return entries


def dump_database(path: Path, scratch: Path) -> bytes:
    with sqlite.dump(sqlite_connection(path), DumpOptions(scratch_dir=scratch)) as dump:
        return dump.stream.read()


def restore_database(data: bytes, destination: Path | str, scratch: Path) -> RestoreResult:
    return sqlite.restore(
        sqlite_connection(destination), io.BytesIO(data), RestoreOptions(scratch_dir=scratch)
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path / "scratch"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs) mounted in tmp_path: writes beyond it fail with ENOSPC."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


# -- files: modes and owners -------------------------------------------------------------------------


@pytest.fixture
def special_modes(files_tree: Path) -> Path:
    """The fixture tree with every kind of mode bit a tar filter would clear, and foreign owners."""
    (files_tree / "shared").mkdir()
    (files_tree / "shared" / "note.txt").write_text("anyone may write\n")
    (files_tree / "team").mkdir()
    (files_tree / "suid-tool").write_bytes(b"\x7fELF not really")
    (files_tree / "sgid-tool").write_bytes(b"another")
    if AS_ROOT:
        # Ids with no name on this host: restored by number. (Owners first: chown clears setuid.)
        os.chown(files_tree / "team", 4321, 4322)
        os.chown(files_tree / "suid-tool", 4321, 4322)
        os.lchown(files_tree / "link", 4323, 4324)
        os.chown(files_tree, 4321, 4321)
    modes = {
        "shared/note.txt": 0o666,
        "shared": 0o1777,  # sticky, world-writable: /tmp-like
        "team": 0o2775,  # setgid, group-writable
        "suid-tool": 0o4755,
        "sgid-tool": 0o2711,
        "sub/b.bin": 0o664,
        ".": 0o750,
    }
    for name, mode in modes.items():
        (files_tree / name).chmod(mode)
    return files_tree


def test_it_restores_every_mode_bit_and_owner(special_modes: Path, tmp_path: Path) -> None:
    data, info = dump_tree(special_modes)
    destination = tmp_path / "restored"

    result = restore_tree(data, info, destination)

    assert attributes(destination) == attributes(special_modes)
    assert stat.S_IMODE(os.lstat(destination / "shared").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(destination / "suid-tool").st_mode) == 0o4755
    assert "checked against the backup's file index" in result.message
    if AS_ROOT:
        assert (os.lstat(destination / "suid-tool").st_uid, os.lstat(destination / "link").st_uid) == (
            4321,
            4323,
        )


def test_it_restores_modes_through_an_incremental_chain(special_modes: Path, tmp_path: Path) -> None:
    full, full_info = dump_tree(special_modes)
    (special_modes / "a.txt").chmod(0o4755)  # a mode change only: same size and content
    (special_modes / "team").chmod(0o3770)
    (special_modes / "shared" / "new.txt").write_text("written later\n")
    (special_modes / "shared" / "new.txt").chmod(0o662)
    incremental, incremental_info = dump_tree(special_modes, previous=full_info)
    with tarfile.open(fileobj=io.BytesIO(incremental)) as archive:
        assert "media/a.txt" in archive.getnames()
    destination = tmp_path / "restored"

    files.restore_chain(
        files_connection(destination),
        [link(full, full_info), link(incremental, incremental_info)],
        RestoreOptions(manifest={"engine_info": incremental_info}),
    )

    assert attributes(destination) == attributes(special_modes)


@pytest.mark.parametrize(
    ("path", "recorded"),
    [("media/a.txt", "f"), ("media/sub", "d")],
    ids=["file", "directory"],
)
def test_it_refuses_a_restored_mode_other_than_the_index_names_the_path(
    files_tree: Path, tmp_path: Path, path: str, recorded: str
) -> None:
    (files_tree / "a.txt").chmod(0o644)
    (files_tree / "sub").chmod(0o755)
    data, info = dump_tree(files_tree)
    entry = info["index"][path].split(" ")
    # The index says 0600 (0700 for the directory) while the archive carries the real mode: what
    # the check sees when a mode could not be set.
    if recorded == "f":
        entry[3], archived, indexed = "600", "0644", "0600"
    else:
        entry[1], archived, indexed = "700", "0755", "0700"
    info["index"][path] = " ".join(entry)
    destination = tmp_path / "restored"
    destination.mkdir()
    (destination / "live.txt").write_text("live")

    with pytest.raises(
        EngineError, match=f"{path} has mode {archived}, not {indexed} as the backup recorded"
    ):
        restore_tree(data, info, destination)

    assert os.listdir(destination) == ["live.txt"]
    assert [name for name in os.listdir(tmp_path) if ".restore-" in name or ".before-" in name] == []


# -- files: hostile members are still refused ---------------------------------------------------


def hostile(*members: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        root = tarfile.TarInfo("media")
        root.type, root.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(root)
        for member in members:
            if isinstance(member, tuple):
                tar.addfile(member[0], io.BytesIO(member[1]))
            else:
                tar.addfile(member)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o6755, **extra: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def setuid_file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = member(name, size=4)
    return info, b"evil"


HOSTILE: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "setuid file climbing out": (lambda outside: hostile(setuid_file("media/../../evil")), "climbs out"),
    "absolute setuid file": (lambda outside: hostile(setuid_file(str(outside / "evil"))), "absolute path"),
    "through a symlink parent": (
        lambda outside: hostile(
            member("media/escape", tarfile.SYMTYPE, 0o777, linkname=str(outside)),
            setuid_file("media/escape/evil"),
        ),
        "outside the destination",
    ),
    "character device": (
        lambda outside: hostile(member("media/null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "special archive member",
    ),
    "fifo": (lambda outside: hostile(member("media/pipe", tarfile.FIFOTYPE)), "special archive member"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_it_still_refuses_hostile_members_whatever_their_mode(case: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    area = tmp_path / "area"
    destination = area / "dest"
    destination.mkdir(parents=True)
    (destination / "live.txt").write_text("live")
    build, message = HOSTILE[case]

    with pytest.raises(EngineError, match=message):
        restore_tree(build(outside), {"roots": {"media": "/srv/media"}}, destination)

    assert os.listdir(outside) == []
    assert os.listdir(area) == ["dest"]  # staging removed
    assert attributes(destination)["live.txt"][4] == b"live"
    assert not Path("/evil").exists()


# -- files: paths no restore accepts ------------------------------------------------------------


@pytest.mark.parametrize("raw", ["/srv/data/..", "/srv/data/../..", "/srv/../data", "/../srv"])
def test_it_refuses_a_files_path_with_dotdot_naming_the_fix(raw: str) -> None:
    problems = files.validate(files_connection(raw))
    assert len(problems) == 1
    key, message = problems[0]
    assert key == "paths"
    assert f"{raw!r} has a '..' part" in message
    assert f"e.g. {os.path.normpath(raw)!r}" in message
    with pytest.raises(EngineError, match=r"restore destination .* has a '\.\.' part"):
        files.check_restore_destination(files_connection(raw))


@pytest.mark.parametrize("raw", ["/srv//data", "/srv/./data/", "/srv/data/."])
def test_it_accepts_empty_and_dot_segments(raw: str) -> None:
    assert files.validate(files_connection(raw)) == []


@pytest.mark.django_db
def test_it_refuses_a_dotdot_path_in_the_config_file(toml_config, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = toml_config(
        targets={"media": {"engine": "files", "paths": [f"{tmp_path}/data/.."], "storages": ["local"]}}
    )
    with pytest.raises(CommandError) as caught:
        call_command("backup_config", "check", str(path))
    assert caught.value.returncode == 2
    assert f"targets.media.paths: '{tmp_path}/data/..' has a '..' part" in str(caught.value)


@pytest.mark.django_db
def test_it_refuses_a_dotdot_path_in_the_admin(admin_client, local_storage, files_tree: Path) -> None:
    form = {
        "name": "media", "engine": "files", "is_active": "on", "compression": "zstd", "timezone": "UTC",
        "options": "{}", "paths": f"{files_tree}/..\n", "storages": [local_storage.pk],
    }  # fmt: skip
    response = admin_client.post("/admin/backups/target/add/", form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["paths"]
    assert any("has a '..' part" in error for error in errors)
    assert not Target.objects.filter(name="media").exists()


# -- files: an error midway -----------------------------------------------------------------------


def test_it_leaves_a_files_destination_as_it_was_when_the_disk_fills_midway(
    files_tree: Path, tiny_disk: Path
) -> None:
    (files_tree / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))  # twice the disk
    data, info = dump_tree(files_tree)
    destination = tiny_disk / "media"
    destination.mkdir()
    (destination / "live.txt").write_text("live data")
    before = attributes(destination)

    with pytest.raises(EngineError, match="No space left on device"):
        restore_tree(data, info, destination)

    assert attributes(destination) == before
    assert os.listdir(tiny_disk) == ["media"]  # the staging directory is gone


# -- SQLite: the previous file kept aside ------------------------------------------------------


def test_it_keeps_the_previous_database_and_its_wal_aside(
    sqlite_source: Path, scratch: Path, tmp_path: Path
) -> None:
    data = dump_database(sqlite_source, scratch)
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    destination = live_dir / "app.sqlite3"
    db = sqlite3.connect(destination)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE kept (note TEXT)")
    db.execute("INSERT INTO kept VALUES ('only in the old wal')")
    db.commit()
    wal = Path(f"{destination}-wal")
    saved_wal = wal.read_bytes()
    db.close()
    wal.write_bytes(saved_wal)  # as a crashed writer leaves it

    result = restore_database(data, destination, scratch)

    assert sqlite_rows(destination) == sqlite_rows(sqlite_source)
    aside = [name for name in os.listdir(live_dir) if name.startswith("app.sqlite3.before-restore-")]
    assert len(aside) == 1 and aside[0].endswith("Z")  # UTC
    assert f"the previous file is kept as {live_dir / aside[0]}" in result.message
    assert sqlite_rows(live_dir / aside[0])["kept"] == [("only in the old wal",)]
    assert not wal.exists() and not Path(f"{destination}-shm").exists()


def test_it_keeps_each_previous_file_when_restoring_twice_within_a_second(
    sqlite_source: Path, scratch: Path, tmp_path: Path
) -> None:
    data = dump_database(sqlite_source, scratch)
    destination = fill_sqlite(tmp_path / "twice.sqlite3", rows=2)
    restore_database(data, destination, scratch)
    restore_database(data, destination, scratch)
    assert len([name for name in os.listdir(tmp_path) if ".before-restore-" in name]) == 2


# -- SQLite: a destination in use -----------------------------------------------------------------

HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "write":
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO audit (event) VALUES ('not committed yet')")
else:
    db.execute("SELECT count(*) FROM audit").fetchone()
print("holding", flush=True)
sys.stdin.readline()
if sys.argv[2] == "write":
    db.execute("COMMIT")
db.close()
"""


@pytest.fixture
def holder() -> Iterator[Callable[[Path, str], subprocess.Popen[str]]]:
    """Start a second process holding a database open: "write" (in a write transaction) or
    "idle" (a read-write connection, no transaction); it lets go when told to."""
    started: list[subprocess.Popen[str]] = []

    def start(path: Path, how: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None and process.stdout.readline() == "holding\n"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.communicate("\n", timeout=30)


def let_go(process: subprocess.Popen[str]) -> None:
    process.communicate("\n", timeout=30)
    assert process.returncode == 0


def test_it_refuses_while_another_process_holds_a_write_transaction(
    sqlite_source: Path, scratch: Path, tmp_path: Path, holder: Callable[[Path, str], subprocess.Popen[str]]
) -> None:
    data = dump_database(fill_sqlite(tmp_path / "other.sqlite3", rows=5), scratch)
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    destination = fill_sqlite(live_dir / "app.sqlite3", rows=3)
    before = destination.read_bytes()
    writer = holder(destination, "write")

    with pytest.raises(EngineError, match=f"open for writing by process {writer.pid} \\(python"):
        sqlite.check_restore_destination(sqlite_connection(destination))
    with pytest.raises(EngineError) as caught:
        restore_database(data, destination, scratch)
    assert str(caught.value).endswith("Restore refused: nothing was changed.")
    assert destination.read_bytes() == before
    # Nothing staged or kept aside (the -journal is the writer's own).
    assert [name for name in os.listdir(live_dir) if name != "app.sqlite3-journal"] == ["app.sqlite3"]

    let_go(writer)
    assert len(sqlite_rows(destination)["audit"]) == 4  # its transaction went through untouched
    restore_database(data, destination, scratch)
    assert sqlite_rows(destination) == sqlite_rows(tmp_path / "other.sqlite3")


def test_it_refuses_while_an_idle_connection_is_open_for_writing(
    scratch: Path, tmp_path: Path, holder: Callable[[Path, str], subprocess.Popen[str]]
) -> None:
    data = dump_database(fill_sqlite(tmp_path / "other.sqlite3", rows=5), scratch)
    destination = fill_sqlite(tmp_path / "app.sqlite3", rows=3)
    idle = holder(destination, "idle")
    holders = sqlite_engine.writers(destination)
    assert len(holders) == 1 and holders[0].startswith(f"process {idle.pid} (")
    with pytest.raises(EngineError, match="Restore refused"):
        restore_database(data, destination, scratch)
    let_go(idle)
    assert sqlite_engine.writers(destination) == []


def test_it_sees_a_write_transaction_through_the_database_lock(
    tmp_path: Path, holder: Callable[[Path, str], subprocess.Popen[str]]
) -> None:
    """The lock half of the check, on its own: what covers a writer /proc cannot show (another
    container sharing the file). It sees transactions, not idle connections."""
    destination = fill_sqlite(tmp_path / "app.sqlite3", rows=3)
    idle = holder(destination, "idle")
    assert sqlite_engine._lock_problem(destination) is None
    let_go(idle)
    writer = holder(destination, "write")
    problem = sqlite_engine._lock_problem(destination)
    assert problem is not None and "another connection holds a transaction open" in problem
    let_go(writer)
    assert sqlite_engine.in_use_problem(destination) is None


# -- SQLite: destinations that are not regular files ---------------------------------------------


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_char_device(path: Path) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")


def make_socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


NODES = {
    "fifo": (make_fifo, "a fifo", stat.S_ISFIFO),
    "character device": (make_char_device, "a character device", stat.S_ISCHR),
    "socket": (make_socket, "a socket", stat.S_ISSOCK),
}


@pytest.mark.parametrize("kind", sorted(NODES))
def test_it_refuses_a_destination_that_is_not_a_regular_file(
    kind: str, sqlite_source: Path, scratch: Path, tmp_path: Path
) -> None:
    make, words, is_kind = NODES[kind]
    data = dump_database(sqlite_source, scratch)
    area = tmp_path / "area"
    area.mkdir()
    node = area / "db.sqlite3"
    make(node)
    rdev = os.lstat(node).st_rdev

    assert sqlite.validate(sqlite_connection(node)) == [
        (
            "database",
            f"{node} is {words}, not a regular file, and a restore would replace it; set the database to the "
            "path of a SQLite file",
        )
    ]
    with pytest.raises(EngineError, match=f"^restore destination {node} is {words}"):
        sqlite.check_restore_destination(sqlite_connection(node))
    with pytest.raises(EngineError, match="Restore refused: nothing was changed"):
        restore_database(data, node, scratch)

    assert is_kind(os.lstat(node).st_mode) and os.lstat(node).st_rdev == rdev
    assert os.listdir(area) == ["db.sqlite3"]  # nothing staged, nothing kept aside


def test_it_refuses_a_symlink_to_a_device(sqlite_source: Path, scratch: Path, tmp_path: Path) -> None:
    device = tmp_path / "device"
    make_char_device(device)
    link_path = tmp_path / "db.sqlite3"
    link_path.symlink_to(device)
    data = dump_database(sqlite_source, scratch)
    with pytest.raises(EngineError, match=f"{link_path} \\(a symlink to {device}\\) is a character device"):
        restore_database(data, link_path, scratch)
    assert link_path.is_symlink() and stat.S_ISCHR(os.lstat(device).st_mode)


def test_it_refuses_dev_null_without_writing_to_it() -> None:
    # Only the checks that cannot write: never a restore aimed at /dev/null.
    before = os.stat("/dev/null")
    assert sqlite.validate(sqlite_connection("/dev/null"))[0][1].startswith(
        "/dev/null is a character device, not a regular file"
    )
    with pytest.raises(EngineError, match=r"^restore destination /dev/null is a character device"):
        sqlite.check_restore_destination(sqlite_connection("/dev/null"))
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_it_restores_into_the_file_a_symlink_points_to(
    sqlite_source: Path, scratch: Path, tmp_path: Path
) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = fill_sqlite(real_dir / "app.sqlite3", rows=3)
    link_path = tmp_path / "current.sqlite3"
    link_path.symlink_to(real)
    data = dump_database(sqlite_source, scratch)

    result = restore_database(data, link_path, scratch)

    assert link_path.is_symlink() and os.readlink(link_path) == str(real)
    assert sqlite_rows(real) == sqlite_rows(sqlite_source)
    assert f"into {real} (the file {link_path} points to)" in result.message
    assert len([name for name in os.listdir(real_dir) if name.startswith("app.sqlite3.before-restore-")]) == 1


@pytest.mark.django_db
def test_it_refuses_dev_null_in_the_config_file(toml_config) -> None:
    path = toml_config(
        targets={
            "nul": {"engine": "sqlite", "database": "/dev/null", "storages": ["local"], "is_active": False}
        }
    )
    with pytest.raises(CommandError) as caught:
        call_command("backup_config", "check", str(path))
    assert caught.value.returncode == 2
    assert "targets.nul.database: /dev/null is a character device, not a regular file" in str(caught.value)


@pytest.mark.django_db
def test_it_refuses_dev_null_in_the_admin(admin_client, local_storage) -> None:
    form = {
        "name": "nul", "engine": "sqlite", "compression": "gzip", "timezone": "UTC", "options": "{}",
        "database": "/dev/null", "storages": [local_storage.pk],
    }  # fmt: skip
    response = admin_client.post("/admin/backups/target/add/", form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["database"]
    assert any(error.startswith("/dev/null is a character device") for error in errors)
    assert not Target.objects.filter(name="nul").exists()


@pytest.mark.django_db
def test_it_refuses_a_device_destination_from_the_restore_command(sqlite_target, tmp_path: Path) -> None:
    backup = services.run_backup(sqlite_target)
    device = tmp_path / "device.sqlite3"
    make_char_device(device)
    Target.objects.create(name="device", engine="sqlite", database=str(device), is_active=False)

    with pytest.raises(CommandError) as caught:
        call_command(
            "backup_restore", "--id", str(backup.pk), "--to", "device", "--yes", stdout=io.StringIO()
        )

    assert caught.value.returncode == 2
    assert "refused" in str(caught.value) and "is a character device" in str(caught.value)
    assert stat.S_ISCHR(os.lstat(device).st_mode) and RestoreLog.objects.count() == 0


# -- SQLite: an error midway ----------------------------------------------------------------------


def test_it_leaves_a_sqlite_destination_as_it_was_when_the_disk_fills_midway(
    scratch: Path, tmp_path: Path, tiny_disk: Path
) -> None:
    source = fill_sqlite(tmp_path / "big.sqlite3", rows=20_000)
    assert source.stat().st_size > 2 * 1024 * 1024
    data = dump_database(source, scratch)
    destination = fill_sqlite(tiny_disk / "live.sqlite3", rows=3)
    before = destination.read_bytes()

    with pytest.raises(EngineError) as caught:
        restore_database(data, destination, scratch)

    assert "No space left on device" in str(caught.value)
    assert f"{destination} was not changed" in str(caught.value)
    assert destination.read_bytes() == before
    assert os.listdir(tiny_disk) == ["live.sqlite3"]  # the staged file is gone
