"""SIGKILL where a process cannot finish by itself (issue 18, fault suite case 1): during a run's
confirm read-back, during retention's deletions, during a restore. (The dump and upload kills
are in tests/test_interrupted_runs.py, tests/test_remote_copies.py and
tests/test_celery_processes.py.)

Each victim is a real ``manage.py`` process writing to moto's S3 through the suite's TCP proxy,
slowed down by the proxy (not mocked) so that the kill lands where it should, and killed when
the catalog (or the bucket) says it is there. Then the watch task runs as beat fires it every
minute, and the next run or restore. Each case runs once per module (a fixture) and records
what it saw; the tests check the invariants on that record: nothing that looks like a backup
and is not one, nothing RUNNING after the watch pass, one alert, the next run succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.config_builder import write_config
from tests.conftest import REPO, digest, fill_sqlite, sqlite_rows
from tests.reliability.kill import kill_when
from tests.servers.proxy import CuttableProxy, cuttable_proxy
from tests.servers.s3 import S3Server

MIB = 1024 * 1024
SLOW_READ = 2 * MIB  # bytes a second from the bucket while a confirm or a restore is to be killed
SLOW_REPLY = 300  # bytes a second: an S3 DeleteObject's answer then takes about a second
STALE = 3  # seconds of silence after which the cleanup case's watch may judge a process lost


@dataclass
class Site:
    """One BACKUPSITE_HOME (its own SQLite catalog) whose only storage is a bucket behind a proxy."""

    root: Path
    env: dict[str, str]
    server: S3Server
    bucket: str
    proxy: CuttableProxy

    @property
    def catalog(self) -> Path:
        return self.root / "home" / "backupsite.sqlite3"

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def watch(self) -> None:
        """One pass of the watch task, as beat fires it every minute."""
        result = self.manage("shell", "-v0", "-c", "from schedules.tasks import watch; watch()")
        assert result.returncode == 0, result.stderr

    def json(self, *args: str) -> Any:
        result = self.manage(*args, "--json")
        assert result.returncode in (0, 1), result.stdout + result.stderr
        return json.loads(result.stdout)

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.catalog, timeout=30)) as db:
            return list(db.execute(sql, params))

    def running(self) -> list[str]:
        """Every catalog row still RUNNING: backups, their steps, restores."""
        rows = self.query(
            "SELECT 'backup ' || id FROM backup_history WHERE status = 'running' UNION ALL "
            "SELECT name || ' step of backup ' || backup_id FROM backups_backupstep WHERE status = 'running' "
            "UNION ALL SELECT 'restore ' || id FROM backup_restore_log WHERE status = 'running'"
        )
        return [row[0] for row in rows]

    def alerts(self) -> list[tuple[str, str]]:
        """(event, delivery status) of every Notification row."""
        return self.query("SELECT event, status FROM backups_notification ORDER BY id")

    def alert_lines(self) -> list[dict[str, Any]]:
        """What the audit-file notifier heard, less the audit events it also gets (``restore.result``)."""
        path = self.root / "alerts.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [line for line in lines if "." not in line["event"]]

    def objects(self) -> list[str]:
        """The bucket's objects, asked of moto directly (not through the proxy)."""
        listing = self.server.client().list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def reconcile(self) -> dict[str, Any]:
        (report,) = self.json("backup_reconcile")
        return dict(report)

    def backup(self, target: str) -> dict[str, Any]:
        (row,) = self.json("backup_create", "--target", target)
        assert row["status"] == "success", row
        return dict(row)


@contextlib.contextmanager
def running_site(root: Path, server: S3Server, **settings: str) -> Iterator[Site]:
    """Targets ``app-db`` (8 MiB of random rows, stored uncompressed), ``small`` (retention keeps
    one backup) and ``app-db-copy`` (a SQLite database to restore into), all stored in one bucket
    through a proxy; an audit-file notifier that hears every alert; ``settings`` in the
    environment of every process."""
    root.mkdir(parents=True, exist_ok=True)
    source = fill_sqlite(root / "app.sqlite3", rows=10)
    with contextlib.closing(sqlite3.connect(source)) as db:
        db.execute("CREATE TABLE blobs (data BLOB)")
        db.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(256 * 1024),) for _ in range(32)])
        db.commit()
    bucket = f"kills-{os.getpid()}-{root.name}".lower().replace("_", "-")
    server.client().create_bucket(Bucket=bucket)
    with cuttable_proxy(server.host, server.port) as proxy:
        offsite = {
            "kind": "s3",
            "bucket": bucket,
            "endpoint_url": f"http://{proxy.host}:{proxy.port}",
            "region": server.region,
            "addressing_style": "path",
            "access_key": "${TEST_S3_ACCESS_KEY}",
            "secret_key": "${TEST_S3_SECRET_KEY}",
            "part_size_mib": 5,
        }
        sqlite = {"engine": "sqlite", "storages": ["offsite"], "compression": "none"}
        config = write_config(
            root / "backupsite.toml",
            storages={"offsite": offsite},
            notifiers={"audit": {"kind": "audit", "path": root / "alerts.jsonl", "default": True}},
            targets={
                "app-db": {**sqlite, "database": source},
                "small": {
                    **sqlite,
                    "database": fill_sqlite(root / "small.sqlite3"),
                    "retention": {"max_backups": 1},
                },
                "app-db-copy": {**sqlite, "database": fill_sqlite(root / "copy.sqlite3", rows=3)},
            },
        )
        env = {
            **os.environ,
            "BACKUPSITE_HOME": str(root / "home"),
            "DJANGO_SETTINGS_MODULE": "backupsite.settings",
            "TEST_S3_ACCESS_KEY": server.access_key,
            "TEST_S3_SECRET_KEY": server.secret_key,
            **settings,
        }
        env.pop("DATABASE_URL", None)
        site = Site(root, env, server, bucket, proxy)
        for args in (("migrate", "--noinput", "-v0"), ("backup_config", "apply", str(config))):
            result = site.manage(*args)
            assert result.returncode == 0, result.stdout + result.stderr
        yield site


# -- killed during confirm -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_in_confirm(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A backup killed while it reads its committed copy back (the ``verify`` step: size, then
    every byte, slowed to SLOW_READ); then two watch passes and the next run."""
    with running_site(tmp_path_factory.mktemp("confirm"), s3_server) as site:
        seen: dict[str, Any] = {}
        site.proxy.throttle(SLOW_READ, upstream=False)  # the upload goes at full speed
        victim = site.start("backup_create", "--target", "app-db")

        def confirming() -> bool:
            last = site.query("SELECT name, status FROM backups_backupstep ORDER BY id DESC LIMIT 1")
            return last == [("verify", "running")]

        kill_when(victim, confirming, "the confirm read-back")
        site.proxy.allow()
        seen["objects after the kill"] = site.objects()
        seen["running after the kill"] = site.running()
        site.watch()
        seen["running after the watch"] = site.running()
        site.watch()
        seen["lost"] = site.query("SELECT id, status, error_message, file_path FROM backup_history")[0]
        seen["steps"] = site.query("SELECT name, status FROM backups_backupstep WHERE backup_id = 1")
        seen["alerts"], seen["alert lines"] = site.alerts(), site.alert_lines()
        seen["next"] = site.backup("app-db")
        seen["objects after the next run"] = site.objects()
        seen["reconcile after the next run"] = site.reconcile()
        seen["alerts in the end"] = site.alerts()
        return seen


def test_it_reaps_a_run_killed_during_confirm_alerts_once_and_the_next_run_succeeds(killed_in_confirm):
    seen = killed_in_confirm
    lost_id, status, error, lost_path = seen["lost"]
    # Killed after the commit, before the manifest: the object alone, under its final name.
    assert seen["objects after the kill"] == [lost_path]
    assert seen["running after the kill"] == ["backup 1", "verify step of backup 1"]
    assert seen["running after the watch"] == []
    assert (lost_id, status) == (1, "failed")
    assert re.fullmatch(
        rf"worker lost: process {re.escape(socket.gethostname())}:\d+ ended without finishing the backup",
        error,
    ), error
    assert ("verify", "failed") in seen["steps"]
    assert seen["alerts"] == [("backup_failed", "sent")]  # one alert, though the watch ran twice
    (line,) = seen["alert lines"]
    assert line["event"] == "backup_failed" and "worker lost" in line["text"]
    assert seen["next"]["id"] == 2  # succeeded (checked as it ran)
    assert seen["alerts in the end"] == [("backup_failed", "sent")]
    # No manifest of the lost run anywhere, so nothing reindex or a restore would take for a
    # backup (its object is the next test's matter); the new backup is whole in the bucket.
    new = seen["next"]["file_path"]
    assert {new, new + ".manifest.json"} <= set(seen["objects after the next run"])
    assert not [key for key in seen["objects after the next run"] if key.startswith(lost_path + ".manifest")]
    report = seen["reconcile after the next run"]
    assert (report["checked"], report["missing"], report["size_differs"]) == (1, [], []), report


def test_it_leaves_no_object_named_like_a_backup_when_a_run_is_killed_during_confirm(killed_in_confirm):
    seen = killed_in_confirm
    lost_path = seen["lost"][3]
    leftovers = [key for key in seen["objects after the next run"] if key.startswith(lost_path)]
    report = seen["reconcile after the next run"]
    assert leftovers == [] or any(lost_path in line for line in report["unknown"])


# -- killed during cleanup -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_in_cleanup(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two backups of ``small`` (retention keeps one); ``backup_cleanup`` killed right after S3
    deleted the first one's data object, while the answer trickles back (SLOW_REPLY) and before
    its manifest is deleted; a watch pass once anything of the dead process counts as silent
    (STALE seconds later: a cleanup records no worker to look for); then ``backup_cleanup``
    again."""
    stale = {"BACKUPSITE_HEARTBEAT_SECONDS": "1", "BACKUPSITE_HEARTBEAT_STALE_SECONDS": str(STALE)}
    with running_site(tmp_path_factory.mktemp("cleanup"), s3_server, **stale) as site:
        seen: dict[str, Any] = {}
        first, second = site.backup("small"), site.backup("small")
        seen["first"], seen["second"] = first, second
        site.proxy.throttle(SLOW_REPLY, upstream=False)
        victim = site.start("backup_cleanup", "--target", "small")
        kill_when(victim, lambda: first["file_path"] not in site.objects(), "the first deletion")
        killed_at = time.monotonic()
        site.proxy.allow()
        seen["objects after the kill"] = site.objects()
        seen["running after the kill"] = site.running()
        seen["reconcile after the kill"] = site.reconcile()
        time.sleep(max(0.0, killed_at + STALE + 0.5 - time.monotonic()))
        site.watch()
        seen["running after the watch"] = site.running()
        seen["again"] = site.json("backup_cleanup", "--target", "small")
        seen["objects in the end"] = site.objects()
        seen["reconcile in the end"] = site.reconcile()
        seen["history"] = site.query(
            "SELECT id, status, deleted_at IS NOT NULL FROM backup_history ORDER BY id"
        )
        seen["alerts"] = site.alerts()
        return seen


def test_it_finishes_a_cleanup_killed_midway_when_it_runs_again(killed_in_cleanup):
    seen = killed_in_cleanup
    first, second = seen["first"]["file_path"], seen["second"]["file_path"]
    manifest = ".manifest.json"
    # Data first, then the manifest: the kill leaves a manifest without its data (never data
    # without a manifest, which nothing would list), and reconcile names exactly that.
    assert seen["objects after the kill"] == [first + manifest, second, second + manifest]
    assert seen["reconcile after the kill"]["missing"] == [f"{first}: backup 1's file is gone"]
    assert seen["reconcile after the kill"]["unknown"] == []
    # Run again, retention finishes what it started: the same backup, nothing else.
    (plan,) = seen["again"]["targets"]
    assert (plan["deleted"], plan["errors"]) == ([1], [])
    assert seen["objects in the end"] == [second, second + manifest]
    assert seen["reconcile in the end"]["clean"], seen["reconcile in the end"]
    assert seen["history"] == [(1, "success", 1), (2, "success", 0)]
    # A killed cleanup loses nothing the next one does not finish: no alert is sent for it.
    assert seen["alerts"] == []


def test_it_leaves_no_cleanup_step_running_after_a_kill_and_the_next_watch(killed_in_cleanup):
    assert killed_in_cleanup["running after the kill"] == ["cleanup step of backup 1"]
    assert killed_in_cleanup["running after the watch"] == []


# -- killed during a restore ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_restoring(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``backup_restore`` of 8 MiB into ``app-db-copy`` killed in its restore pass (after the
    checksum pass; bytes read slowed to SLOW_READ); two watch passes; then the restore again."""
    with running_site(tmp_path_factory.mktemp("restore"), s3_server) as site:
        seen: dict[str, Any] = {}
        stored = site.backup("app-db")
        (destination,) = site.query("SELECT database FROM backups_target WHERE name = 'app-db-copy'")
        path = Path(destination[0])
        seen["digest before"] = digest(path)
        site.proxy.throttle(SLOW_READ, upstream=False)
        victim = site.start("backup_restore", "--id", str(stored["id"]), "--to", "app-db-copy", "--yes")

        def restoring() -> bool:  # past the checksum pass: writing the new database
            row = site.query("SELECT status, progress FROM backup_restore_log")
            return bool(row) and row[0][0] == "running" and row[0][1] > stored["file_size"]

        kill_when(victim, restoring, "the restore pass")
        site.proxy.allow()
        seen["pid"] = victim.pid
        seen["digest after the kill"] = digest(path)
        seen["beside after the kill"] = sorted(p.name for p in path.parent.iterdir() if "copy" in p.name)
        seen["running after the kill"] = site.running()
        site.watch()
        seen["running after the watch"] = site.running()
        site.watch()
        seen["log"] = site.query(
            "SELECT id, status, error_message, completed_at IS NOT NULL FROM backup_restore_log"
        )
        seen["alerts"], seen["alert lines"] = site.alerts(), site.alert_lines()
        seen["audit"] = site.query(
            "SELECT outcome, details FROM backup_audit_event WHERE action = 'restore.result' ORDER BY id"
        )
        seen["again"] = site.json("backup_restore", "--id", str(stored["id"]), "--to", "app-db-copy", "--yes")
        seen["rows in the end"] = sqlite_rows(path)
        seen["source rows"] = sqlite_rows(site.root / "app.sqlite3")
        return seen


def test_it_reaps_a_restore_killed_midway_alerts_once_and_the_next_restore_succeeds(killed_restoring):
    seen = killed_restoring
    assert seen["running after the kill"] == ["restore 1"]
    # SQLite's swap is one rename: the destination is the old database, byte for byte; the new
    # one was being written to a temporary file beside it, which stays (the message says so).
    assert seen["digest after the kill"] == seen["digest before"]
    temporary = [name for name in seen["beside after the kill"] if name.startswith(".copy.sqlite3.restore-")]
    assert seen["beside after the kill"] == sorted(["copy.sqlite3", *temporary]) and len(temporary) == 1
    # The watch ends it, once, saying what happened and what SQLite guarantees.
    assert seen["running after the watch"] == []
    ((log_id, status, error, completed),) = seen["log"]
    assert (log_id, status, completed) == (1, "failed", 1)
    assert error.startswith(
        f"worker lost while restoring: process {socket.gethostname()}:{seen['pid']} ended without "
        "finishing the restore; the destination may be partly restored; SQLite writes the restored "
        "database to a temporary file (.NAME.restore-*) beside it and swaps it in with one rename, "
        "so the database file is either as it was or wholly restored"
    ), error
    (alert,) = seen["alert lines"]
    assert seen["alerts"] == [("restore_finished", "sent")]  # one alert, though the watch ran twice
    assert alert["fields"]["status"] == "failed" and alert["severity"] == "error"
    assert alert["text"].startswith(
        "Restore 1 of backup 1 into app-db-copy failed: worker lost while restoring"
    )
    ((outcome, details),) = seen["audit"]
    assert outcome == "failure" and json.loads(details)["error"] == error[:500]
    # The next restore succeeds.
    assert seen["again"]["status"] == "success", seen["again"]
    assert seen["rows in the end"] == seen["source rows"]
