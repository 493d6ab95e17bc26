"""Incremental backups of the files engine on real trees: what each link archives, its index, and
restoring every point in time of a chain, by the engine and by hand with tar.

Links are built the way the services build them: the dump's info goes through JSON (the manifest)
before it is the next dump's ``previous`` or a restore's ``engine_info``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from backups.engines import EngineError
from backups.engines.base import ChainLink, Connection, DumpOptions, RestoreOptions, RestoreResult
from backups.engines.files.engine import FilesEngine

engine = FilesEngine()
Entry = tuple[Any, ...]


def connection(*paths: Path | str, **options: Any) -> Connection:
    return Connection(name="files", engine="files", paths=tuple(str(p) for p in paths), options=options)


def state(root: Path) -> dict[str, Entry]:
    """Every entry under ``root`` by relative path: files with mode and bytes, directories with
    mode, symlinks with their target."""
    entries: dict[str, Entry] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entries[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[relative] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                entries[relative] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return entries


def members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return [member.name for member in tar]


def make_link(data: bytes, info: dict[str, Any], name: str = "") -> ChainLink:
    def feed(consume: Callable[[BinaryIO], str]) -> str:
        return consume(io.BytesIO(data))

    return ChainLink(manifest={"engine_info": info, "file": name}, feed=feed)


class Chain:
    """Backups of ``roots`` made one after the other: a full one, then incrementals."""

    def __init__(self, *roots: Path, **options: Any) -> None:
        self.roots, self.options = roots, options
        self.archives: list[bytes] = []
        self.infos: list[dict[str, Any]] = []

    def backup(self, **options: Any) -> tuple[bytes, dict[str, Any]]:
        previous = self.infos[-1] if self.infos else None
        dump_options = DumpOptions(backup_type="incremental" if previous else "full", previous=previous)
        with engine.dump(connection(*self.roots, **{**self.options, **options}), dump_options) as dump:
            data = dump.stream.read()
        info = json.loads(json.dumps(dump.info))  # what the manifest gives back
        self.archives.append(data)
        self.infos.append(info)
        return data, info

    def links(self) -> list[ChainLink]:
        return [
            make_link(data, info, f"backup-{number}.tar")
            for number, (data, info) in enumerate(zip(self.archives, self.infos, strict=True), start=1)
        ]


def restore(links: list[ChainLink], *destinations: Path) -> RestoreResult:
    return engine.restore_chain(connection(*destinations), links, RestoreOptions(manifest=links[-1].manifest))


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".restore-" in name)


def set_mtime(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


# -- the five-backup chain ------------------------------------------------------------------------

ORIGINAL_SAME = b"AAAA-original-AAAA"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src" / "media"
    for directory in ("bin", "docs/old", "dir-to-file", "empty", "sub/deep", "locked"):
        (root / directory).mkdir(parents=True)
    (root / "a.txt").write_text("hello\n")
    (root / "same.txt").write_bytes(ORIGINAL_SAME)
    (root / "touch.txt").write_text("touch me\n")
    (root / "mode.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "mode.sh").chmod(0o644)
    (root / "bin" / "blob.bin").write_bytes(os.urandom(300_000))
    (root / "all256.bin").write_bytes(bytes(range(256)) * 40)
    (root / "docs" / "readme.md").write_text("read me\n")
    (root / "docs" / "old" / "notes.txt").write_text("notes\n")
    (root / "dir-to-file" / "inner.txt").write_text("inner\n")
    (root / "file-to-dir").write_text("was a file\n")
    (root / "sub" / "deep" / "x.txt").write_text("x\n")
    (root / "locked" / "f.txt").write_text("in a read-only directory\n")
    (root / "locked").chmod(0o555)
    (root / "link").symlink_to("a.txt")
    (root / "abslink").symlink_to("/etc/hostname")
    (root / "unicode ü name.txt").write_text("ü\n")
    return root


def build_chain(source: Path) -> tuple[Chain, list[dict[str, Entry]]]:
    """Five backups with creates, edits, touches, deletions, renames and type changes between
    them; returns the chain and what a restore of each point must give."""
    chain = Chain(source)
    expected: list[dict[str, Entry]] = []

    data, info = chain.backup()
    assert members(data) == list(info["index"])  # a full backup archives everything it indexes
    expected.append(state(source))

    # 2: edits, a touch, the trust rule, a deletion, a creation, a rename.
    (source / "a.txt").write_text("hello world\n")
    same = source / "same.txt"
    before = same.stat().st_mtime_ns
    same.write_bytes(b"BBBB-modified-BBBB")  # same size, then its mtime put back:
    set_mtime(same, before)  # trusted unchanged (documented), so not archived
    set_mtime(source / "touch.txt", (source / "touch.txt").stat().st_mtime_ns + 10**10)
    (source / "docs" / "old" / "notes.txt").unlink()
    (source / "new.bin").write_bytes(os.urandom(1000))
    (source / "docs" / "readme.md").rename(source / "docs" / "README.md")
    (source / "locked" / "f.txt").write_text("changed inside a read-only directory\n")
    data, info = chain.backup()
    assert sorted(members(data)) == [
        "media/a.txt",
        "media/docs/README.md",
        "media/locked/f.txt",
        "media/new.bin",
    ]
    assert info["deleted"] == ["media/docs/old/notes.txt", "media/docs/readme.md"]
    assert (info["changed"], info["touched"], info["files"]) == (4, 1, 4)
    point = state(source)
    point["same.txt"] = ("file", 0o644, ORIGINAL_SAME)  # what the trust rule gives back
    expected.append(point)

    # 3: a directory tree deleted, types changed, a link retargeted, a mode changed.
    shutil.rmtree(source / "sub")
    (source / "docs" / "old").rmdir()
    shutil.rmtree(source / "dir-to-file")
    (source / "dir-to-file").write_text("now a file\n")
    (source / "file-to-dir").unlink()
    (source / "file-to-dir").mkdir()
    (source / "file-to-dir" / "inside.txt").write_text("now a directory\n")
    (source / "link").unlink()
    (source / "link").symlink_to("new.bin")
    (source / "mode.sh").chmod(0o755)  # same content, same mtime: the mode alone is a change
    same.write_bytes(b"CCCC-modified-CCCC")
    set_mtime(same, before + 2 * 10**10)
    (source / "newempty").mkdir()
    data, info = chain.backup()
    assert sorted(members(data)) == [
        "media/dir-to-file",
        "media/file-to-dir",
        "media/file-to-dir/inside.txt",
        "media/link",
        "media/mode.sh",
        "media/newempty",
        "media/same.txt",
    ]
    assert info["deleted"] == ["media/dir-to-file/inner.txt", "media/docs/old", "media/sub"]
    expected.append(state(source))

    # 4: only touches: nothing to archive.
    set_mtime(source / "touch.txt", (source / "touch.txt").stat().st_mtime_ns + 10**10)
    set_mtime(source / "docs", 10**18)
    data, info = chain.backup()
    assert members(data) == []
    assert (info["deleted"], info["changed"], info["touched"], info["files"], info["bytes"]) == (
        [],
        0,
        1,
        0,
        0,
    )
    expected.append(state(source))

    # 5: a directory renamed, a file replaced by a symlink, a symlink by a directory, a directory
    # by a symlink, binary content edited in place, a directory's mode changed.
    (source / "bin").rename(source / "binaries")
    (source / "a.txt").unlink()
    (source / "a.txt").symlink_to("new.bin")
    (source / "abslink").unlink()
    (source / "abslink").mkdir()
    (source / "abslink" / "in.txt").write_text("in\n")
    (source / "empty").rmdir()
    (source / "empty").symlink_to("docs")
    edited = bytearray((source / "all256.bin").read_bytes())
    edited[5000] ^= 0xFF
    (source / "all256.bin").write_bytes(bytes(edited))
    set_mtime(source / "all256.bin", before + 3 * 10**10)
    (source / "locked").chmod(0o700)
    data, info = chain.backup()
    assert sorted(members(data)) == [
        "media/a.txt",
        "media/abslink",
        "media/abslink/in.txt",
        "media/all256.bin",
        "media/binaries",
        "media/binaries/blob.bin",
        "media/empty",
        "media/locked",
    ]
    assert info["deleted"] == ["media/bin"]
    expected.append(state(source))
    return chain, expected


def test_it_restores_every_point_in_time_of_a_five_backup_chain(source: Path, tmp_path: Path) -> None:
    chain, expected = build_chain(source)
    links = chain.links()
    for point in range(1, 6):
        destination = tmp_path / f"point-{point}"
        result = restore(links[:point], destination)
        assert state(destination) == expected[point - 1], f"point {point}"
        files = sorted(name for name, entry in expected[point - 1].items() if entry[0] == "file")
        assert sorted(result.files) == [f"media/{name}" for name in files]
        assert (f"chain of {point} backups" in result.message) == (point > 1)
        assert result.message.endswith(", checked against the backup's file index")
        assert leftovers(tmp_path) == []


def test_it_restores_a_chain_by_hand_with_tar_and_the_deleted_lists(source: Path, tmp_path: Path) -> None:
    """The procedure of the notes: for each archive in order, remove its manifest's deleted paths,
    then extract it over the tree."""
    chain, expected = build_chain(source)
    for point in range(1, 6):
        into = tmp_path / f"by-hand-{point}"
        into.mkdir()
        for data, info in zip(chain.archives[:point], chain.infos[:point], strict=True):
            paths = [str(into / path) for path in info.get("deleted", [])]
            subprocess.run(["rm", "-rf", "--", *paths], check=True, timeout=30)
            subprocess.run(["tar", "-xf", "-", "-C", str(into)], input=data, check=True, timeout=30)
        assert state(into / "media") == expected[point - 1], f"point {point}"


def test_it_never_deletes_through_a_directory_replaced_by_a_symlink(files_tree: Path, tmp_path: Path) -> None:
    """``sub`` becomes a link to a live directory holding a ``b.bin`` too: the deleted
    ``media/sub/b.bin`` is removed before the link appears, never through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.bin").write_text("not ours to delete\n")
    chain = Chain(files_tree)
    chain.backup()
    shutil.rmtree(files_tree / "sub")
    (files_tree / "sub").symlink_to(outside)
    _, info = chain.backup()
    assert info["deleted"] == ["media/sub/b.bin", "media/sub/deeper"]
    destination = tmp_path / "restored"
    restore(chain.links(), destination)
    assert os.readlink(destination / "sub") == str(outside)
    assert (outside / "b.bin").read_text() == "not ours to delete\n"
    assert state(destination) == state(files_tree)


def test_it_indexes_exactly_what_it_archived_while_a_file_is_being_rewritten(
    files_tree: Path, tmp_path: Path
) -> None:
    """A file rewritten in place (same size) during every backup: whether a link archives it,
    only touches it or sees it change between its two reads, the index describes the archived
    bytes, so every point of the chain restores and passes the index check."""
    busy = files_tree / "busy.bin"
    size = 4 * 1024 * 1024
    busy.write_bytes(bytes(size))
    chain = Chain(files_tree)
    chain.backup()
    stop = threading.Event()

    def rewrite() -> None:
        fd = os.open(busy, os.O_WRONLY)
        try:
            for turn in itertools.cycle(range(256)):
                if stop.is_set():
                    return
                os.pwrite(fd, bytes([turn]) * size, 0)
        finally:
            os.close(fd)

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        for _ in range(4):
            data, info = chain.backup()
            with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
                for member in tar:
                    if member.name == "media/busy.bin":
                        handle = tar.extractfile(member)
                        assert handle is not None
                        archived = hashlib.sha256(handle.read()).hexdigest()
                        assert info["index"]["media/busy.bin"].split(" ")[4] == archived
            assert info["changed_while_reading"] in ([], ["media/busy.bin"])  # usually the latter
    finally:
        stop.set()
        writer.join(timeout=10)
    for point in range(2, 6):
        restore(chain.links()[:point], tmp_path / f"point-{point}")


def test_it_indexes_the_whole_tree_with_sizes_times_modes_and_digests(files_tree: Path) -> None:
    _, info = Chain(files_tree).backup()
    index = info["index"]
    a_txt = files_tree / "a.txt"
    st = a_txt.stat()
    digest = hashlib.sha256(b"hello\n").hexdigest()
    assert index["media/a.txt"] == f"f 6 {st.st_mtime_ns} {stat.S_IMODE(st.st_mode):o} {digest}"
    assert index["media/link"] == "l a.txt"
    assert index["media/empty-dir"] == f"d {stat.S_IMODE((files_tree / 'empty-dir').stat().st_mode):o}"
    assert set(index) == {"media", *(f"media/{name}" for name in state(files_tree))}
    big = (files_tree / "sub" / "b.bin").read_bytes()
    assert index["media/sub/b.bin"].split(" ")[4] == hashlib.sha256(big).hexdigest()
    assert "previous_snapshot" not in info and len(info["snapshot"]) == 32


def test_it_records_what_an_incremental_holds(files_tree: Path) -> None:
    chain = Chain(files_tree)
    _, full = chain.backup()
    (files_tree / "added.txt").write_text("12345")
    (files_tree / "a.txt").unlink()
    _, info = chain.backup()
    assert info["previous_snapshot"] == full["snapshot"] != info["snapshot"]
    assert (info["files"], info["bytes"], info["changed"]) == (1, 5, 1)
    assert (info["tree_files"], info["tree_bytes"]) == (3, 5 + 100_000 + 3)
    assert info["deleted"] == ["media/a.txt"]
    assert info["changed_while_reading"] == [] and info["skipped_special"] == []


def test_it_honours_include_and_exclude_in_incrementals(files_tree: Path, tmp_path: Path) -> None:
    chain = Chain(files_tree, exclude=["*.log"])
    chain.backup()
    (files_tree / "debug.log").write_text("noise\n")
    (files_tree / "notes.txt").write_text("kept\n")
    data, info = chain.backup()
    assert members(data) == ["media/notes.txt"]
    assert "media/debug.log" not in info["index"]

    # Excluding more later: what the new filter leaves out is deleted from the next point on.
    data, info = chain.backup(exclude=["*.log", "sub"])
    assert members(data) == []
    assert info["deleted"] == ["media/sub"]
    restore(chain.links(), tmp_path / "restored")
    assert "sub" not in state(tmp_path / "restored")
    assert "debug.log" not in state(tmp_path / "restored")

    only_text = Chain(files_tree, include=["*.txt"])
    only_text.backup()
    (files_tree / "more.bin").write_bytes(b"\x00\x01")
    (files_tree / "more.txt").write_text("more\n")
    data, _ = only_text.backup()
    assert members(data) == ["media/more.txt"]


def test_it_restores_a_chain_of_several_roots(files_tree: Path, tmp_path: Path) -> None:
    photos = tmp_path / "elsewhere" / "photos"
    photos.mkdir(parents=True)
    (photos / "cat.jpg").write_bytes(os.urandom(2000))
    chain = Chain(files_tree, photos)
    chain.backup()
    (photos / "dog.jpg").write_bytes(os.urandom(3000))
    (files_tree / "a.txt").write_text("changed\n")
    data, _ = chain.backup()
    assert sorted(members(data)) == ["media/a.txt", "photos/dog.jpg"]
    restore(chain.links(), tmp_path / "all")
    assert state(tmp_path / "all" / "media") == state(files_tree)
    assert state(tmp_path / "all" / "photos") == state(photos)


def test_it_trial_restores_an_incremental_archive(files_tree: Path) -> None:
    chain = Chain(files_tree)
    chain.backup()
    (files_tree / "new.txt").write_text("new\n")
    data, _ = chain.backup()
    assert (
        engine.trial_restore(io.BytesIO(data), RestoreOptions())
        == "archive lists 1 file(s), 4 bytes read back"
    )
    data, _ = chain.backup()
    assert (
        engine.trial_restore(io.BytesIO(data), RestoreOptions())
        == "archive lists 0 file(s), 0 bytes read back"
    )


def test_it_keeps_a_non_empty_destination_aside_when_restoring_a_chain(
    files_tree: Path, tmp_path: Path
) -> None:
    chain = Chain(files_tree)
    chain.backup()
    (files_tree / "new.txt").write_text("new\n")
    chain.backup()
    destination = tmp_path / "area" / "media"
    destination.mkdir(parents=True)
    (destination / "old.txt").write_text("previous contents")
    result = restore(chain.links(), destination)
    assert state(destination) == state(files_tree)
    (aside,) = [p for p in destination.parent.iterdir() if p.name.startswith("media.before-restore-")]
    assert state(aside) == {"old.txt": ("file", 0o644, b"previous contents")}
    assert str(aside) in result.message


# -- refusals: the destination is left untouched ------------------------------------------------


@pytest.fixture
def three_links(files_tree: Path) -> Chain:
    chain = Chain(files_tree)
    chain.backup()
    (files_tree / "a.txt").write_text("second\n")
    (files_tree / "two.bin").write_bytes(os.urandom(50_000))
    chain.backup()
    (files_tree / "a.txt").write_text("third!\n")
    chain.backup()
    return chain


@pytest.fixture
def live(tmp_path: Path) -> Path:
    destination = tmp_path / "arena" / "dest"
    destination.mkdir(parents=True)
    (destination / "live.txt").write_text("live data")
    return destination


def assert_untouched(destination: Path) -> None:
    assert state(destination) == {"live.txt": ("file", 0o644, b"live data")}
    assert os.listdir(destination.parent) == ["dest"]  # no staging left behind


def test_it_refuses_a_chain_with_a_missing_link_before_reading_anything(
    three_links: Chain, live: Path
) -> None:
    read: list[str] = []

    def watched(link: ChainLink) -> ChainLink:
        def feed(consume: Callable[[BinaryIO], str]) -> str:
            read.append(link.manifest["file"])
            return link.feed(consume)

        return ChainLink(link.manifest, feed)

    fed = [watched(link) for link in three_links.links()]
    with pytest.raises(EngineError, match=r"backup 2 of 2 in the chain \(backup-3.tar\) was not built on"):
        restore([fed[0], fed[2]], live)
    assert read == []
    with pytest.raises(EngineError, match="starts with a full backup"):
        restore(fed[1:], live)
    assert_untouched(live)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: os.urandom(20_000), id="random-bytes"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_it_refuses_a_garbled_middle_link(
    three_links: Chain, live: Path, damage: Callable[[bytes], bytes]
) -> None:
    three_links.archives[1] = damage(three_links.archives[1])
    with pytest.raises(EngineError, match=r"backup 2 of 3 .*damaged or not a tar stream"):
        restore(three_links.links(), live)
    assert_untouched(live)


def test_it_lets_a_failing_feed_abort_the_restore(three_links: Chain, live: Path) -> None:
    class DigestMismatch(Exception):
        pass

    links = three_links.links()

    def feed(consume: Callable[[BinaryIO], str]) -> str:
        links[1].feed(consume)
        raise DigestMismatch("stored bytes differ from the recorded SHA-256")

    with pytest.raises(DigestMismatch):
        restore([links[0], ChainLink(links[1].manifest, feed), links[2]], live)
    assert_untouched(live)


def test_it_refuses_a_tree_that_does_not_match_the_last_index(three_links: Chain, live: Path) -> None:
    # A byte flipped inside a file's content: the tar reads fine, the digest does not match.
    data = bytearray(three_links.archives[2])
    offset = data.index(b"third!\n")
    data[offset] ^= 0x01
    three_links.archives[2] = bytes(data)
    with pytest.raises(EngineError, match=r"media/a.txt has other content than the backup recorded"):
        restore(three_links.links(), live)
    assert_untouched(live)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda index: index.pop("media/two.bin"), "media/two.bin is not in the backup's index"),
        (lambda index: index.update({"media/ghost": "d 755"}), "media/ghost is missing"),
        (lambda index: index.update({"media/link": "l elsewhere"}), "points to 'a.txt', not 'elsewhere'"),
        (lambda index: index.update({"media/sub": "l b.bin"}), "media/sub is a directory, not a symlink"),
    ],
)
def test_it_compares_the_restored_tree_with_the_index(
    three_links: Chain, live: Path, tamper: Callable[[dict[str, str]], object], message: str
) -> None:
    tamper(three_links.infos[2]["index"])
    with pytest.raises(EngineError, match=message):
        restore(three_links.links(), live)
    assert_untouched(live)


def test_it_refuses_deleted_paths_that_leave_the_tree(three_links: Chain, live: Path) -> None:
    three_links.infos[1]["deleted"] = ["media/../../evil"]
    with pytest.raises(EngineError, match="climbs out"):
        restore(three_links.links(), live)
    three_links.infos[1]["deleted"] = ["media"]
    with pytest.raises(EngineError, match="whole archived directory"):
        restore(three_links.links(), live)
    assert_untouched(live)


# -- refusals when dumping -------------------------------------------------------------------------


def test_it_needs_a_full_backup_when_the_paths_changed(files_tree: Path, tmp_path: Path) -> None:
    _, info = Chain(files_tree).backup()
    other = tmp_path / "other"
    other.mkdir()
    options = DumpOptions(backup_type="incremental", previous=info)
    with (
        pytest.raises(EngineError, match=r"paths changed since the previous backup.*take a full backup"),
        engine.dump(connection(files_tree, other), options) as dump,
    ):
        dump.stream.read()


@pytest.mark.parametrize(
    ("previous", "message"),
    [
        (None, "needs the previous backup of its chain"),
        ({"roots": {}, "files": 3}, "has no file index"),
    ],
)
def test_it_needs_an_indexed_previous_backup(files_tree: Path, previous: Any, message: str) -> None:
    options = DumpOptions(backup_type="incremental", previous=previous)
    with pytest.raises(EngineError, match=message), engine.dump(connection(files_tree), options) as dump:
        dump.stream.read()


def test_it_makes_a_full_backup_whatever_previous_says(files_tree: Path) -> None:
    _, info = Chain(files_tree).backup()
    with engine.dump(connection(files_tree), DumpOptions(backup_type="full", previous=info)) as dump:
        data = dump.stream.read()
    assert members(data) == list(dump.info["index"])
    assert engine.supported_types == ("full", "files", "incremental")
