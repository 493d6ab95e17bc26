"""The SQLite engine on real database files: snapshots, filters, safe restores, trial restores."""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from backups.engines import EngineError, get_engine
from backups.engines.base import Connection, DumpOptions, RestoreOptions
from backups.engines.sqlite import SQLiteEngine
from tests.conftest import fill_sqlite, sqlite_rows

engine = SQLiteEngine()


def connection(path: Path, **extra: object) -> Connection:
    return Connection(name="db", engine="sqlite", database=str(path), **extra)  # type: ignore[arg-type]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path / "scratch"


def dump_bytes(path: Path, scratch: Path, **extra: object) -> tuple[bytes, dict[str, object]]:
    with engine.dump(connection(path, **extra), DumpOptions(scratch_dir=scratch)) as dump:
        data = dump.stream.read()
    return data, dump.info


def restore_bytes(data: bytes, destination: Path, scratch: Path) -> object:
    return engine.restore(connection(destination), io.BytesIO(data), RestoreOptions(scratch_dir=scratch))


def schema(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return list(
            db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
        )
    finally:
        db.close()


def test_it_is_registered_under_its_key() -> None:
    assert isinstance(get_engine("sqlite"), SQLiteEngine)


def test_it_round_trips_a_database(sqlite_source: Path, scratch: Path, tmp_path: Path) -> None:
    data, info = dump_bytes(sqlite_source, scratch)
    assert data.startswith(b"SQLite format 3\x00")
    assert info["tables"] == ["audit", "people"]
    assert str(info["server_version"]).startswith("SQLite ")

    destination = tmp_path / "restored" / "copy.sqlite3"
    result = restore_bytes(data, destination, scratch)

    assert sqlite_rows(destination) == sqlite_rows(sqlite_source)
    assert schema(destination) == schema(sqlite_source)  # index and view too
    assert result.tables == ["audit", "people"]  # type: ignore[attr-defined]
    assert str(destination) in result.message  # type: ignore[attr-defined]


def test_it_dumps_a_file_the_sqlite3_tool_reads(sqlite_source: Path, scratch: Path, tmp_path: Path) -> None:
    data, _ = dump_bytes(sqlite_source, scratch)
    copy = tmp_path / "by-hand.sqlite3"
    copy.write_bytes(data)
    result = subprocess.run(
        ["sqlite3", str(copy), "PRAGMA integrity_check;", "SELECT count(*) FROM people;"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "200"]


def test_it_leaves_no_snapshot_file_in_the_scratch_dir(sqlite_source: Path, scratch: Path) -> None:
    with engine.dump(connection(sqlite_source), DumpOptions(scratch_dir=scratch)) as dump:
        assert os.listdir(scratch) == []  # unlinked as soon as it is open for streaming
        assert dump.stream.read(100).startswith(b"SQLite format 3")
    assert os.listdir(scratch) == []
    assert dump.stream.closed


def test_it_leaves_no_snapshot_file_when_the_consumer_fails(sqlite_source: Path, scratch: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="consumer"),
        engine.dump(connection(sqlite_source), DumpOptions(scratch_dir=scratch)) as dump,
    ):
        dump.stream.read(10)
        raise RuntimeError("consumer gave up")
    assert os.listdir(scratch) == []
    assert dump.stream.closed


def test_it_leaves_no_snapshot_file_when_the_dump_fails(sqlite_source: Path, scratch: Path) -> None:
    with pytest.raises(EngineError, match="no_such_table"):
        dump_bytes(sqlite_source, scratch, include_tables=("no_such_table",))
    assert os.listdir(scratch) == []


def test_it_keeps_only_included_tables(sqlite_source: Path, scratch: Path, tmp_path: Path) -> None:
    data, info = dump_bytes(sqlite_source, scratch, include_tables=("people",))
    assert info["tables"] == ["people"]
    destination = tmp_path / "only-people.sqlite3"
    restore_bytes(data, destination, scratch)
    assert sqlite_rows(destination) == {"people": sqlite_rows(sqlite_source)["people"]}


def test_it_drops_excluded_tables(sqlite_source: Path, scratch: Path, tmp_path: Path) -> None:
    full, _ = dump_bytes(sqlite_source, scratch)
    data, info = dump_bytes(sqlite_source, scratch, exclude_tables=("people",))
    assert info["tables"] == ["audit"]
    assert len(data) < len(full)  # vacuumed: the dropped rows are gone, not just unlinked
    assert "persön".encode() not in data
    destination = tmp_path / "no-people.sqlite3"
    restore_bytes(data, destination, scratch)
    assert sqlite_rows(destination) == {"audit": sqlite_rows(sqlite_source)["audit"]}


def test_it_combines_include_and_exclude(tmp_path: Path, scratch: Path) -> None:
    source = fill_sqlite(tmp_path / "src.sqlite3", rows=5)
    db = sqlite3.connect(source)
    with db:
        db.execute("CREATE TABLE extra (x)")
        db.execute('CREATE TABLE "odd ""name""" (x)')
        db.execute('INSERT INTO "odd ""name""" VALUES (1)')
    db.close()
    _, info = dump_bytes(
        source, scratch, include_tables=("audit", "extra", 'odd "name"'), exclude_tables=("extra",)
    )
    assert info["tables"] == ["audit", 'odd "name"']
    data, info = dump_bytes(source, scratch, exclude_tables=('odd "name"',))
    assert info["tables"] == ["audit", "extra", "people"]
    destination = tmp_path / "filtered.sqlite3"
    restore_bytes(data, destination, scratch)
    assert sorted(sqlite_rows(destination)) == ["audit", "extra", "people"]


@pytest.mark.parametrize("option", ["include_tables", "exclude_tables"])
def test_it_rejects_an_unknown_table_name(sqlite_source: Path, scratch: Path, option: str) -> None:
    with pytest.raises(EngineError, match="table\\(s\\) not found in the database: ghost, phantom"):
        dump_bytes(sqlite_source, scratch, **{option: ("people", "ghost", "phantom")})


def test_it_reports_a_missing_source(tmp_path: Path, scratch: Path) -> None:
    missing = tmp_path / "missing.sqlite3"
    with pytest.raises(EngineError, match=f"^SQLite database {missing} does not exist$"):
        dump_bytes(missing, scratch)
    assert not missing.exists()  # a read-only open never creates the file


def test_it_reports_a_directory_as_source(tmp_path: Path, scratch: Path) -> None:
    with pytest.raises(EngineError, match="is a directory, not a database file"):
        dump_bytes(tmp_path, scratch)


def test_it_reports_a_file_that_is_not_a_database(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the pages you are looking for\n" * 100)
    with pytest.raises(EngineError, match=f"SQLite database {path} cannot be read: file is not a database"):
        dump_bytes(path, scratch)
    assert path.read_text().startswith("these are not")


def test_it_probes_a_readable_database(sqlite_source: Path) -> None:
    engine.probe(connection(sqlite_source))


def test_it_takes_a_consistent_snapshot_while_another_connection_writes(
    tmp_path: Path, scratch: Path
) -> None:
    path = tmp_path / "busy.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, txn INTEGER NOT NULL, payload BLOB)")
    db.execute("CREATE TABLE ballast (data BLOB)")  # makes each copy take a moment
    db.executemany("INSERT INTO ballast VALUES (?)", [(os.urandom(4096),) for _ in range(3000)])
    db.commit()
    db.close()

    stop = threading.Event()
    committed = [0]
    errors: list[BaseException] = []

    def write_pairs() -> None:
        writer = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            txn = 0
            while not stop.is_set():
                txn += 1
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("INSERT INTO ledger (txn, payload) VALUES (?, ?)", (txn, os.urandom(300)))
                writer.execute("INSERT INTO ledger (txn, payload) VALUES (?, ?)", (txn, os.urandom(300)))
                writer.execute("COMMIT")
                committed[0] = txn
        except BaseException as exc:
            errors.append(exc)
        finally:
            writer.close()

    thread = threading.Thread(target=write_pairs, daemon=True)
    thread.start()
    snapshots: list[tuple[int, bytes, int]] = []
    try:
        deadline = time.monotonic() + 10
        while committed[0] < 20 and time.monotonic() < deadline and not errors:
            time.sleep(0.005)
        for _ in range(3):
            before = committed[0]
            data, _ = dump_bytes(path, scratch)
            snapshots.append((before, data, committed[0]))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert not thread.is_alive()
    assert snapshots[-1][2] > snapshots[0][0], "the writer made no progress during the dumps"

    for index, (before, data, after) in enumerate(snapshots):
        destination = tmp_path / f"restored-{index}.sqlite3"
        restore_bytes(data, destination, scratch)
        restored = sqlite3.connect(destination)
        try:
            counts = dict(restored.execute("SELECT txn, count(*) FROM ledger GROUP BY txn"))
            ballast = restored.execute("SELECT count(*) FROM ballast").fetchone()[0]
        finally:
            restored.close()
        assert ballast == 3000
        torn = {txn: n for txn, n in counts.items() if n != 2}
        assert torn == {}, f"snapshot {index} holds incomplete transactions {torn}"
        assert sorted(counts) == list(range(1, len(counts) + 1)), "not a prefix of the committed transactions"
        assert before <= len(counts) <= after
    assert os.listdir(scratch) == []


def test_it_refuses_to_restore_into_a_directory(sqlite_source: Path, scratch: Path, tmp_path: Path) -> None:
    data, _ = dump_bytes(sqlite_source, scratch)
    target_dir = tmp_path / "a-directory"
    target_dir.mkdir()
    with pytest.raises(EngineError, match="is a directory"):
        restore_bytes(data, target_dir, scratch)
    assert os.listdir(target_dir) == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: os.urandom(len(data)), id="random-bytes"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:100] + os.urandom(len(data) - 100), id="garbled-after-header"),
    ],
)
def test_it_leaves_the_destination_intact_when_the_restore_data_is_bad(
    sqlite_source: Path, scratch: Path, tmp_path: Path, damage: object
) -> None:
    data, _ = dump_bytes(sqlite_source, scratch)
    destination_dir = tmp_path / "live"
    destination_dir.mkdir()
    destination = fill_sqlite(destination_dir / "live.sqlite3", rows=3)
    before_bytes, before_rows = destination.read_bytes(), sqlite_rows(destination)

    with pytest.raises(EngineError):
        restore_bytes(damage(data), destination, scratch)  # type: ignore[operator]

    assert destination.read_bytes() == before_bytes
    assert sqlite_rows(destination) == before_rows
    assert os.listdir(destination_dir) == ["live.sqlite3"]


def test_it_refuses_an_empty_restore_stream(tmp_path: Path, scratch: Path) -> None:
    destination = tmp_path / "empty-restore.sqlite3"
    with pytest.raises(EngineError, match="empty database file"):
        restore_bytes(b"", destination, scratch)
    assert os.listdir(tmp_path) == []


def test_it_replaces_an_existing_database_and_keeps_its_mode(
    sqlite_source: Path, scratch: Path, tmp_path: Path
) -> None:
    data, _ = dump_bytes(sqlite_source, scratch)
    (tmp_path / "live").mkdir()
    destination = fill_sqlite(tmp_path / "live" / "live.sqlite3", rows=3)
    destination.chmod(0o640)
    before = destination.read_bytes()
    result = restore_bytes(data, destination, scratch)
    assert sqlite_rows(destination) == sqlite_rows(sqlite_source)
    assert stat.S_IMODE(destination.stat().st_mode) == 0o640
    names = sorted(os.listdir(tmp_path / "live"))
    assert names[0] == "live.sqlite3" and len(names) == 2
    assert re.fullmatch(r"live\.sqlite3\.before-restore-\d{8}T\d{6}Z", names[1])
    assert (tmp_path / "live" / names[1]).read_bytes() == before  # the previous file, kept aside
    assert f"the previous file is kept as {tmp_path / 'live' / names[1]}" in result.message  # type: ignore[attr-defined]


def test_it_does_not_replay_a_stale_wal_onto_the_restored_database(
    sqlite_source: Path, scratch: Path, tmp_path: Path
) -> None:
    data, _ = dump_bytes(sqlite_source, scratch)
    destination = tmp_path / "live.sqlite3"
    live = sqlite3.connect(destination)
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, score REAL, photo BLOB)")
    live.execute("INSERT INTO people (name) VALUES ('from the old wal')")
    live.commit()
    wal = Path(f"{destination}-wal")
    saved_wal = wal.read_bytes()
    assert saved_wal  # the change lives in the WAL only
    live.close()
    wal.write_bytes(saved_wal)  # as a crashed writer would leave it

    restore_bytes(data, destination, scratch)

    assert sqlite_rows(destination) == sqlite_rows(sqlite_source)
    assert not wal.exists()
    assert not Path(f"{destination}-shm").exists()


def test_it_restores_over_a_damaged_database(sqlite_source: Path, scratch: Path, tmp_path: Path) -> None:
    # Replacing a broken database is what restores are for.
    data, _ = dump_bytes(sqlite_source, scratch)
    (tmp_path / "live").mkdir()
    destination = tmp_path / "live" / "broken.sqlite3"
    destination.write_bytes(b"this database was overwritten by accident" * 200)
    restore_bytes(data, destination, scratch)
    assert sqlite_rows(destination) == sqlite_rows(sqlite_source)
    names = sorted(os.listdir(tmp_path / "live"))
    assert names[0] == "broken.sqlite3" and names[1].startswith("broken.sqlite3.before-restore-")
    assert len(names) == 2


def test_it_creates_missing_parent_directories_on_restore(
    sqlite_source: Path, scratch: Path, tmp_path: Path
) -> None:
    data, _ = dump_bytes(sqlite_source, scratch)
    destination = tmp_path / "new" / "place" / "db.sqlite3"
    restore_bytes(data, destination, scratch)
    assert sqlite_rows(destination) == sqlite_rows(sqlite_source)


def test_it_restores_a_snapshot_of_a_wal_database(tmp_path: Path, scratch: Path) -> None:
    source = fill_sqlite(tmp_path / "wal.sqlite3", rows=20)
    db = sqlite3.connect(source)
    db.execute("PRAGMA journal_mode=WAL")
    with db:
        db.execute("INSERT INTO audit (event) VALUES ('only in the wal')")
    data, _ = dump_bytes(source, scratch)
    expected = sqlite_rows(source)
    db.close()
    destination_dir = tmp_path / "out"
    destination = destination_dir / "restored.sqlite3"
    restore_bytes(data, destination, scratch)
    assert sqlite_rows(destination) == expected
    assert ("only in the wal",) in [row[1:] for row in expected["audit"]]
    assert os.listdir(destination_dir) == ["restored.sqlite3"]


def test_it_trial_restores_a_good_dump(sqlite_source: Path, scratch: Path) -> None:
    data, _ = dump_bytes(sqlite_source, scratch)
    summary = engine.trial_restore(io.BytesIO(data), RestoreOptions(scratch_dir=scratch))
    assert summary == "integrity_check ok, 2 table(s)"
    assert os.listdir(scratch) == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"garbage that is not a database" * 500, "integrity check failed"),
        (b"", "empty database file"),
    ],
)
def test_it_fails_a_trial_restore_of_bad_data(scratch: Path, payload: bytes, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        engine.trial_restore(io.BytesIO(payload), RestoreOptions(scratch_dir=scratch))
    assert os.listdir(scratch) == []


def test_it_fails_a_trial_restore_of_a_truncated_dump(sqlite_source: Path, scratch: Path) -> None:
    data, _ = dump_bytes(sqlite_source, scratch)
    with pytest.raises(EngineError, match="integrity check failed"):
        engine.trial_restore(io.BytesIO(data[: len(data) // 2]), RestoreOptions(scratch_dir=scratch))


def test_it_dumps_from_a_read_only_copy_without_writing_to_it(tmp_path: Path, scratch: Path) -> None:
    source = fill_sqlite(tmp_path / "ro.sqlite3", rows=10)
    before = source.read_bytes()
    data, _ = dump_bytes(source, scratch)
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro.sqlite3", "scratch"]
    copy = tmp_path / "copy.sqlite3"
    shutil.copyfileobj(io.BytesIO(data), copy.open("wb"))
    assert sqlite_rows(copy) == sqlite_rows(source)
