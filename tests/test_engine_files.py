"""The files engine on real directory trees: tar streams, filters, safe staged restores."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backups.engines import EngineError, get_engine
from backups.engines.base import Connection, DumpOptions, RestoreOptions, RestoreResult
from backups.engines.files.engine import FilesEngine

engine = FilesEngine()

TREE_FILES = {"a.txt", "sub/b.bin", "sub/deeper/ünïcode name.txt"}


def connection(*paths: Path | str, **options: Any) -> Connection:
    return Connection(name="files", engine="files", paths=tuple(str(p) for p in paths), options=options)


def dump_tar(*roots: Path, **options: Any) -> tuple[bytes, dict[str, Any]]:
    with engine.dump(connection(*roots, **options), DumpOptions()) as dump:
        data = dump.stream.read()
    return data, dump.info


def restore_tar(data: bytes, info: dict[str, Any], *destinations: Path) -> RestoreResult:
    return engine.restore(
        connection(*destinations), io.BytesIO(data), RestoreOptions(manifest={"engine_info": info})
    )


def snapshot(root: Path) -> dict[str, tuple[str, object]]:
    """Every entry under ``root``: files with their bytes, symlinks with their target, directories."""
    entries: dict[str, tuple[str, object]] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[relative] = ("dir", None)
            else:
                entries[relative] = ("file", path.read_bytes())
    return entries


def tar_members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return [member.name for member in tar]


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".restore-" in name)


def test_it_is_registered_under_its_key() -> None:
    assert isinstance(get_engine("files"), FilesEngine)


def test_it_round_trips_a_tree(files_tree: Path, tmp_path: Path) -> None:
    data, info = dump_tar(files_tree)
    assert info["roots"] == {"media": str(files_tree)}
    assert info["files"] == 3
    assert info["bytes"] == 6 + 100_000 + len("ü\n".encode())
    assert info["skipped_special"] == []

    destination = tmp_path / "restored"
    result = restore_tar(data, info, destination)

    assert snapshot(destination) == snapshot(files_tree)
    assert (destination / "link").is_symlink()
    assert os.readlink(destination / "link") == "a.txt"
    assert (destination / "link").read_text() == "hello\n"
    assert (destination / "empty-dir").is_dir()
    assert list((destination / "empty-dir").iterdir()) == []
    assert sorted(result.files) == sorted(f"media/{name}" for name in TREE_FILES)
    assert str(destination) in result.message
    assert leftovers(tmp_path) == []


def test_it_puts_each_root_under_its_name_in_the_archive(files_tree: Path) -> None:
    data, _ = dump_tar(files_tree)
    names = tar_members(data)
    assert names[0] == "media"
    assert all(name == "media" or name.startswith("media/") for name in names)
    assert {"media/a.txt", "media/link", "media/empty-dir", "media/sub/deeper/ünïcode name.txt"} <= set(names)


def test_it_writes_a_pax_archive_the_system_tar_extracts(files_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "by-hand"
    out.mkdir()
    with engine.dump(connection(files_tree), DumpOptions()) as dump:
        tar = subprocess.Popen(
            ["tar", "-xf", "-", "-C", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert tar.stdin is not None
        shutil.copyfileobj(dump.stream, tar.stdin)
        tar.stdin.close()
        assert tar.wait(timeout=30) == 0, tar.stderr.read() if tar.stderr else ""
    assert snapshot(out / "media") == snapshot(files_tree)


def test_it_restores_an_archive_written_by_the_system_tar(files_tree: Path, tmp_path: Path) -> None:
    made = subprocess.run(
        ["tar", "-cf", "-", "-C", str(files_tree.parent), files_tree.name],
        capture_output=True,
        timeout=30,
        check=True,
    )
    destination = tmp_path / "from-gnu-tar"
    restore_tar(made.stdout, {"roots": {"media": str(files_tree)}}, destination)
    assert snapshot(destination) == snapshot(files_tree)


def test_it_archives_a_symlinked_root_as_the_directory_it_points_to(files_tree: Path, tmp_path: Path) -> None:
    # e.g. /srv/app/current -> /srv/app/releases/42: tar -xf by hand must give files, not a link
    # back to the live tree.
    current = tmp_path / "current"
    current.symlink_to(files_tree)
    data, info = dump_tar(current)
    assert info["roots"] == {"current": str(current)}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        root = next(iter(tar))
        assert (root.name, root.isdir()) == ("current", True)

    out = tmp_path / "by-hand"
    out.mkdir()
    subprocess.run(
        ["tar", "-xf", "-", "-C", str(out)], input=data, capture_output=True, timeout=30, check=True
    )
    assert not (out / "current").is_symlink()
    assert snapshot(out / "current") == snapshot(files_tree)

    destination = tmp_path / "restored"
    restore_tar(data, info, destination)
    assert snapshot(destination) == snapshot(files_tree)


def test_it_preserves_the_executable_bit(files_tree: Path, tmp_path: Path) -> None:
    script = files_tree / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (files_tree / "private.txt").write_text("mine")
    (files_tree / "private.txt").chmod(0o600)
    data, info = dump_tar(files_tree)
    destination = tmp_path / "restored"
    restore_tar(data, info, destination)
    assert stat.S_IMODE((destination / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((destination / "private.txt").stat().st_mode) == 0o600


def test_it_stores_hard_links_as_plain_files(files_tree: Path, tmp_path: Path) -> None:
    os.link(files_tree / "a.txt", files_tree / "hard.txt")
    data, info = dump_tar(files_tree)
    destination = tmp_path / "restored"
    restore_tar(data, info, destination)
    assert (destination / "hard.txt").read_text() == "hello\n"
    assert (destination / "a.txt").read_text() == "hello\n"
    assert info["files"] == 4


def test_it_skips_special_files_without_blocking_on_them(files_tree: Path, tmp_path: Path) -> None:
    os.mkfifo(files_tree / "sub" / "pipe")
    data, info = dump_tar(files_tree)  # opening a fifo for reading would hang
    assert info["skipped_special"] == ["media/sub/pipe"]
    assert "media/sub/pipe" not in tar_members(data)


def test_it_keeps_absolute_symlinks_as_links(files_tree: Path, tmp_path: Path) -> None:
    (files_tree / "abs-link").symlink_to("/etc/hostname")
    data, info = dump_tar(files_tree)
    destination = tmp_path / "restored"
    restore_tar(data, info, destination)
    assert os.readlink(destination / "abs-link") == "/etc/hostname"


@pytest.mark.parametrize(
    ("options", "absent", "present"),
    [
        (
            {"exclude": ["*.bin"]},
            {"sub/b.bin"},
            {"a.txt", "sub/deeper/ünïcode name.txt", "link", "empty-dir"},
        ),
        ({"exclude": ["deeper"]}, {"sub/deeper", "sub/deeper/ünïcode name.txt"}, {"sub/b.bin", "a.txt"}),
        ({"exclude": ["sub/deeper"]}, {"sub/deeper"}, {"sub", "sub/b.bin"}),
        ({"exclude": ["empty-dir", "link"]}, {"empty-dir", "link"}, {"a.txt"}),
        (
            {"include": ["*.txt"]},
            {"sub/b.bin", "link"},
            {"a.txt", "sub/deeper/ünïcode name.txt", "empty-dir"},
        ),
        ({"include": ["sub/*"]}, {"a.txt", "link"}, {"sub/b.bin", "sub/deeper/ünïcode name.txt"}),
        ({"include": ["*.txt"], "exclude": ["a.*"]}, {"a.txt", "sub/b.bin"}, {"sub/deeper/ünïcode name.txt"}),
    ],
)
def test_it_applies_include_and_exclude_globs(
    files_tree: Path, tmp_path: Path, options: dict[str, list[str]], absent: set[str], present: set[str]
) -> None:
    data, info = dump_tar(files_tree, **options)
    destination = tmp_path / "restored"
    restore_tar(data, info, destination)
    restored = snapshot(destination)
    assert absent.isdisjoint(restored), sorted(absent & set(restored))
    assert present <= set(restored), sorted(present - set(restored))
    original = snapshot(files_tree)
    assert all(restored[name] == original[name] for name in restored)
    assert info["files"] == sum(1 for kind, _ in restored.values() if kind == "file")


def test_it_reports_a_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(EngineError, match=f"^path {missing} does not exist$"):
        dump_tar(missing)


def test_it_reports_a_root_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(EngineError, match="is not a directory"):
        dump_tar(path)


def test_it_validates_roots_that_share_a_name(tmp_path: Path) -> None:
    problems = engine.validate(connection(tmp_path / "a" / "media", tmp_path / "b" / "media"))
    assert len(problems) == 1
    field, message = problems[0]
    assert field == "paths"
    assert "share the name 'media'" in message


def test_it_keeps_the_old_contents_of_a_non_empty_destination_aside(files_tree: Path, tmp_path: Path) -> None:
    data, info = dump_tar(files_tree)
    area = tmp_path / "area"
    destination = area / "media"
    destination.mkdir(parents=True)
    (destination / "old.txt").write_text("previous contents")

    result = restore_tar(data, info, destination)

    assert snapshot(destination) == snapshot(files_tree)
    (aside,) = [p for p in area.iterdir() if p.name.startswith("media.before-restore-")]
    assert snapshot(aside) == {"old.txt": ("file", b"previous contents")}
    assert str(aside) in result.message
    assert leftovers(area) == []


def test_it_restores_into_an_empty_existing_destination_without_keeping_anything_aside(
    files_tree: Path, tmp_path: Path
) -> None:
    data, info = dump_tar(files_tree)
    area = tmp_path / "area"
    (area / "media").mkdir(parents=True)
    result = restore_tar(data, info, area / "media")
    assert sorted(os.listdir(area)) == ["media"]
    assert "kept" not in result.message


def test_it_restores_twice_in_a_row_into_the_same_destination(files_tree: Path, tmp_path: Path) -> None:
    data, info = dump_tar(files_tree)
    area = tmp_path / "area"
    destination = area / "media"
    destination.mkdir(parents=True)
    (destination / "old.txt").write_text("previous contents")

    restore_tar(data, info, destination)
    restore_tar(data, info, destination)  # e.g. a retry within the same second

    assert snapshot(destination) == snapshot(files_tree)
    kept = sorted(p.name for p in area.iterdir() if p.name.startswith("media.before-restore-"))
    assert len(kept) == 2
    assert leftovers(area) == []


def test_it_refuses_a_destination_that_is_a_file(files_tree: Path, tmp_path: Path) -> None:
    data, info = dump_tar(files_tree)
    path = tmp_path / "a-file"
    path.write_text("keep me")
    with pytest.raises(EngineError, match="exists and is not a directory"):
        restore_tar(data, info, path)
    assert path.read_text() == "keep me"


def test_it_needs_the_roots_from_the_manifest(files_tree: Path, tmp_path: Path) -> None:
    data, _ = dump_tar(files_tree)
    with pytest.raises(EngineError, match="does not list the archived directories"):
        restore_tar(data, {}, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


# -- hostile and damaged archives -------------------------------------------------------------------


def hostile_tar(*extra: Callable[[tarfile.TarFile], None]) -> bytes:
    """A tar stream with one honest file under ``media/`` and then the given hostile members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("media")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        add_file(tar, "media/honest.txt", b"honest")
        for add in extra:
            add(tar)
    return buffer.getvalue()


def add_file(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(content))


def add_special(name: str, kind: bytes, linkname: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.mode = 0o644
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3
        tar.addfile(info)

    return add


@pytest.fixture
def arena(tmp_path: Path) -> Path:
    """Where hostile restores aim; anything appearing beside ``dest`` is an escape."""
    area = tmp_path / "arena" / "inner"
    area.mkdir(parents=True)
    return area


HOSTILE = {
    "dotdot-top": (lambda outside: [lambda tar: add_file(tar, "../evil", b"evil")], "climbs out"),
    "dotdot-nested": (lambda outside: [lambda tar: add_file(tar, "media/../../evil", b"evil")], "climbs out"),
    "dotdot-deep": (
        lambda outside: [lambda tar: add_file(tar, "media/sub/../../../../evil", b"e")],
        "climbs out",
    ),
    "absolute": (
        lambda outside: [lambda tar: add_file(tar, str(outside / "evil"), b"evil")],
        "absolute path",
    ),
    "fifo": (lambda outside: [add_special("media/fifo", tarfile.FIFOTYPE)], "special archive member"),
    "char-device": (lambda outside: [add_special("media/null", tarfile.CHRTYPE)], "special archive member"),
    "block-device": (lambda outside: [add_special("media/disk", tarfile.BLKTYPE)], "special archive member"),
    "hard-link": (
        lambda outside: [add_special("media/passwd", tarfile.LNKTYPE, "/etc/passwd")],
        "special archive member",
    ),
    "other-root": (
        lambda outside: [lambda tar: add_file(tar, "elsewhere/evil", b"evil")],
        "outside the archived",
    ),
    "through-symlink": (
        lambda outside: [
            add_special("media/escape", tarfile.SYMTYPE, str(outside)),
            lambda tar: add_file(tar, "media/escape/evil", b"evil"),
        ],
        "outside the destination",
    ),
    "through-relative-symlink": (
        lambda outside: [
            add_special("media/up", tarfile.SYMTYPE, "../../.."),
            lambda tar: add_file(tar, "media/up/evil", b"evil"),
        ],
        "outside the destination",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_it_rejects_hostile_archive_members(case: str, arena: Path, tmp_path: Path) -> None:
    outside = tmp_path / "arena"
    members, message = HOSTILE[case]
    data = hostile_tar(*members(outside))
    destination = arena / "dest"
    before_outside = snapshot(tmp_path)

    with pytest.raises(EngineError, match=message):
        restore_tar(data, {"roots": {"media": "/srv/media"}}, destination)

    assert snapshot(tmp_path) == before_outside, "the restore wrote something"
    assert not destination.exists()
    assert os.listdir(arena) == []  # staging removed
    assert not Path("/evil").exists()


def test_it_rejects_hostile_members_even_into_an_existing_destination(arena: Path) -> None:
    destination = arena / "dest"
    destination.mkdir()
    (destination / "live.txt").write_text("live data")
    data = hostile_tar(lambda tar: add_file(tar, "media/../../evil", b"evil"))
    with pytest.raises(EngineError):
        restore_tar(data, {"roots": {"media": "/srv/media"}}, destination)
    assert snapshot(destination) == {"live.txt": ("file", b"live data")}
    assert os.listdir(arena) == ["dest"]


@pytest.mark.parametrize("case", ["dotdot-top", "absolute", "fifo", "char-device", "hard-link"])
def test_it_rejects_hostile_members_in_a_trial_restore(case: str, tmp_path: Path) -> None:
    members, message = HOSTILE[case]
    with pytest.raises(EngineError, match=message):
        engine.trial_restore(io.BytesIO(hostile_tar(*members(tmp_path))), RestoreOptions())


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: os.urandom(20_000), id="random-bytes"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_it_rejects_a_damaged_archive_and_keeps_the_destination(
    files_tree: Path, arena: Path, damage: Callable[[bytes], bytes]
) -> None:
    data, info = dump_tar(files_tree)
    destination = arena / "dest"
    destination.mkdir()
    (destination / "live.txt").write_text("live data")
    with pytest.raises(EngineError, match="damaged or not a tar stream"):
        restore_tar(damage(data), info, destination)
    assert snapshot(destination) == {"live.txt": ("file", b"live data")}
    assert os.listdir(arena) == ["dest"]


def test_it_trial_restores_a_good_archive(files_tree: Path) -> None:
    data, _ = dump_tar(files_tree)
    summary = engine.trial_restore(io.BytesIO(data), RestoreOptions())
    assert summary == f"archive lists 3 file(s), {6 + 100_000 + 3} bytes read back"


@pytest.mark.parametrize("payload", [b"", b"not a tar archive" * 1000], ids=["empty", "garbage"])
def test_it_fails_a_trial_restore_of_garbage(payload: bytes) -> None:
    with pytest.raises(EngineError, match="damaged or not a tar stream"):
        engine.trial_restore(io.BytesIO(payload), RestoreOptions())


# -- the dump's producer thread ---------------------------------------------------------------------


@pytest.fixture
def big_tree(files_tree: Path) -> Path:
    """Much more than a pipe buffer, so the archive writer is blocked when the consumer stops."""
    (files_tree / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    return files_tree


def run_with_timeout(body: Callable[[], None], timeout: float = 20) -> BaseException | None:
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            body()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the dump hung after the consumer stopped reading"
    return outcome[0]


def test_it_does_not_hang_when_the_consumer_fails_early(big_tree: Path) -> None:
    def consume() -> None:
        with engine.dump(connection(big_tree), DumpOptions()) as dump:
            assert dump.stream.read(1000)
            raise RuntimeError("upload failed")

    error = run_with_timeout(consume)
    assert isinstance(error, RuntimeError)
    assert str(error) == "upload failed"


def test_it_fails_the_dump_when_the_consumer_stops_reading_early(big_tree: Path) -> None:
    def consume() -> None:
        with engine.dump(connection(big_tree), DumpOptions()) as dump:
            assert dump.stream.read(1000)

    error = run_with_timeout(consume)
    assert isinstance(error, EngineError)
    assert "archiving files failed" in str(error)


def test_it_streams_a_large_tree_completely(big_tree: Path, tmp_path: Path) -> None:
    data, info = dump_tar(big_tree)
    assert info["bytes"] == 8 * 1024 * 1024 + 100_009
    destination = tmp_path / "restored"
    restore_tar(data, info, destination)
    assert (destination / "big.bin").read_bytes() == (big_tree / "big.bin").read_bytes()


# -- several roots ----------------------------------------------------------------------------------


@pytest.fixture
def two_roots(files_tree: Path, tmp_path: Path) -> tuple[Path, Path]:
    photos = tmp_path / "elsewhere" / "photos"
    (photos / "2024").mkdir(parents=True)
    (photos / "2024" / "cat.jpg").write_bytes(os.urandom(5_000))
    (photos / "readme").write_text("photos\n")
    return files_tree, photos


def test_it_restores_several_roots_beneath_one_destination(
    two_roots: tuple[Path, Path], tmp_path: Path
) -> None:
    media, photos = two_roots
    data, info = dump_tar(media, photos)
    assert info["roots"] == {"media": str(media), "photos": str(photos)}
    destination = tmp_path / "all"
    result = restore_tar(data, info, destination)
    assert sorted(os.listdir(destination)) == ["media", "photos"]
    assert snapshot(destination / "media") == snapshot(media)
    assert snapshot(destination / "photos") == snapshot(photos)
    assert "media/a.txt" in result.files and "photos/2024/cat.jpg" in result.files
    assert leftovers(destination) == []


def test_it_restores_several_roots_into_as_many_destinations(
    two_roots: tuple[Path, Path], tmp_path: Path
) -> None:
    media, photos = two_roots
    data, info = dump_tar(media, photos)
    first, second = tmp_path / "restored-a", tmp_path / "restored-b"
    restore_tar(data, info, first, second)
    assert snapshot(first) == snapshot(media)
    assert snapshot(second) == snapshot(photos)


def test_it_refuses_a_mismatched_number_of_destinations(two_roots: tuple[Path, Path], tmp_path: Path) -> None:
    data, info = dump_tar(*two_roots)
    destinations = [tmp_path / "x", tmp_path / "y", tmp_path / "z"]
    with pytest.raises(EngineError, match="holds 2 directories but the destination lists 3 paths"):
        restore_tar(data, info, *destinations)
    assert not any(path.exists() for path in destinations)
    with pytest.raises(EngineError, match="no paths to restore into"):
        restore_tar(data, info)
