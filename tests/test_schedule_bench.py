"""The schedule load benchmark's arithmetic (bench/schedulebench.py, report_schedules.py): each
run's parts read from a catalog's rows, and the report of several sizes. No workers, no broker:
a tiny catalog file with only the columns the bench reads."""

from __future__ import annotations

import importlib
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# By name, as run.py imports them (bench/ is no package, and outside mypy's tree).
schedulebench = importlib.import_module("schedulebench")
report_schedules = importlib.import_module("report_schedules")

SLOT = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _catalog(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE backup_history (id INTEGER PRIMARY KEY, schedule_id INTEGER, status TEXT, "
        "created_at TEXT, started_at TEXT, completed_at TEXT, worker TEXT)"
    )
    db.execute(
        "CREATE TABLE backups_backupstep (id INTEGER PRIMARY KEY, backup_id INTEGER, name TEXT, "
        "started_at TEXT, completed_at TEXT)"
    )
    at = SLOT + timedelta(milliseconds=100)
    for pk in (1, 2):  # two runs on one worker process, 50 ms apart
        created, started = at, at + timedelta(milliseconds=5)
        dump_end = started + timedelta(milliseconds=40)
        upload_end = dump_end + timedelta(milliseconds=10)
        completed = upload_end + timedelta(milliseconds=3)
        db.execute(
            "INSERT INTO backup_history VALUES (?, ?, 'success', ?, ?, ?, 'host:7')",
            (pk, pk, _text(created), _text(started), _text(completed)),
        )
        db.executemany(
            "INSERT INTO backups_backupstep (backup_id, name, started_at, completed_at) VALUES (?, ?, ?, ?)",
            [
                (pk, "dump", _text(started), _text(dump_end)),
                (pk, "upload", _text(dump_end), _text(upload_end)),
            ],
        )
        at = completed + timedelta(milliseconds=50)
    db.commit()
    db.close()
    return path


def test_it_reads_each_runs_parts_from_the_catalog(tmp_path: Path) -> None:
    parts = schedulebench.overhead(_catalog(tmp_path / "catalog.sqlite3"), SLOT)
    assert parts["claim"].median_ms == pytest.approx(5)
    assert parts["dump"].median_ms == pytest.approx(40)
    assert parts["upload"].median_ms == pytest.approx(10)
    assert parts["finish"].median_ms == pytest.approx(3)
    assert parts["run"].median_ms == pytest.approx(58)
    assert parts["outside the dump"].median_ms == pytest.approx(18)
    assert parts["between runs"].runs == 1 and parts["between runs"].median_ms == pytest.approx(50)


def test_it_reports_every_size_with_its_parts_and_queries(tmp_path: Path) -> None:
    parts = schedulebench.overhead(_catalog(tmp_path / "catalog.sqlite3"), SLOT)
    phases = {name: {"ms_median": 1.0, "ms_p90": 2.0, "queries_median": 2} for name in ("claim", "dump")}
    profile = {
        "runs": 2, "phases": phases, "total_ms_median": 9.0, "outside_dump_ms_median": 8.0,
        "queries_median": 33, "queries_max": 33,
    }  # fmt: skip
    results = [_result(count, parts, profile) for count in (2, 20)]
    text = report_schedules.console_table(results)
    assert "between runs" in text and "total (outside the dump)" in text
    rows = report_schedules.summary_rows(results)
    assert [row[0] for row in rows] == ["2", "20"] and rows[1][4] == "10.0"  # runs/s
    assert rows[0][8] == "33"  # catalog queries per run
    machine = {"date": "d", "code": "c", "nproc": "2", "CPU": "x", "RAM": "1", "kernel": "k"}
    block = report_schedules.markdown_block(results, machine, "bench/run.py --engines schedules")
    assert block.count("### ") == 2 and "targets | all succeed" in block


def _result(count: int, parts: dict[str, object], profile: dict[str, object]) -> object:
    return schedulebench.ScheduleResult(
        count=count, workers=[], slot=SLOT.isoformat(), statuses={"success": count},
        schedules_with_backup=count, duplicates=0, lost=0, not_terminal=0, first_start_s=0.1,
        first_completion_s=0.2, last_completion_s=count / 10, source_kib=300.0, unattributed=0,
        errors=[], setup_seconds=1.0, seconds=2.0, versions={}, load=["0 0 0", "0 0 0"], argv=["celery"],
        overhead=parts, profile=profile,
    )  # fmt: skip
