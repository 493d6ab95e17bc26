"""The catalog database stopped mid-run (issue 18, fault suite case 4): a real PostgreSQL catalog
(its own cluster, started and stopped by ``pg_ctl``) under real ``manage.py backup_create``
processes that write one SQLite database to a local storage and to moto's S3 behind the suite's
TCP proxy, slowed down so that the outage lands where it should.

Two cases, each run once per module (a fixture) and recorded: the catalog stopped during the S3
upload and started again while the process still runs; and the catalog stopped while the copies
are read back, the process ending while it is down, the catalog started afterwards. Both stop
with ``pg_ctl -m fast`` (every session ended): ``-m immediate`` on the suite's cluster, which runs
with ``synchronous_commit=off``, would also drop the last acknowledged commits, a loss of the
test cluster's making, not the product's. Then the watch, reconcile and the next run. Invariants: the run is
FAILED with a human message (never RUNNING after the watch pass), one alert, no object of the
failed run in either storage, reconcile clean, the next run succeeds, and the process's output is
log lines and one error line, no traceback and no secret.

The catalog's password is in a pgpass file (PGPASSFILE), never in argv or the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backups.engines.postgresql.engine import pgpass_line
from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite
from tests.servers.postgres import PostgresServer, running_postgres
from tests.servers.proxy import CuttableProxy, cuttable_proxy
from tests.servers.s3 import S3Server

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
SLOW_UPLOAD = 3 * MIB // 4  # bytes a second to the bucket: the 6 MiB upload takes about 8 s
SLOW_READ = 2 * MIB  # bytes a second from the bucket: the confirm read-back takes about 3 s
CATALOG = "catalog"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (WARNING|ERROR) \S+ .+")


@dataclass
class Site:
    """One BACKUPSITE_HOME whose catalog is a database of ``pg`` and whose target ``app-db``
    (6 MiB of random rows, uncompressed) is stored in ``local`` and in a bucket behind ``proxy``."""

    root: Path
    env: dict[str, str]
    pg: PostgresServer
    s3: S3Server
    bucket: str
    proxy: CuttableProxy

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def json(self, *args: str) -> Any:
        result = self.manage(*args, "--json")
        assert result.returncode in (0, 1), result.stdout + result.stderr
        return json.loads(result.stdout)

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        return self.pg.execute(CATALOG, sql, params or None)

    def catalog(self, up: bool) -> None:
        """Start the catalog's server, or stop it (``pg_ctl -m fast``: every session ended)."""
        try:
            if up:
                self.pg.resume()
            else:
                self.pg.halt("fast")
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"pg_ctl failed: {exc.stderr!r}\n{self.pg.log_tail()}")

    def wait_for_step(self, process: subprocess.Popen[str], name: str, label: str = "") -> int:
        """The id of the backup once its step ``name`` (with ``label`` in its message) runs."""
        deadline = time.monotonic() + 60
        while True:
            rows = self.query(
                "SELECT backup_id FROM backups_backupstep WHERE name = %s AND status = 'running' "
                "AND message LIKE %s",
                name, f"%{label}%",
            )  # fmt: skip
            if rows:
                return int(rows[0][0])
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.communicate()
                pytest.fail(f"the run never got to its {name} step: {process.returncode} {output}")
            time.sleep(0.02)

    def wait_for_heartbeat(self, process: subprocess.Popen[str], backup_id: int) -> None:
        """Return once the run's heartbeat thread has touched its row (after the claim's stamp)."""
        deadline = time.monotonic() + 30
        sql = "SELECT heartbeat_at - started_at >= interval '0.5 seconds' FROM backup_history WHERE id = %s"
        while not self.query(sql, backup_id)[0][0]:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no heartbeat from backup {backup_id}: {process.returncode}")
            time.sleep(0.05)

    def running(self) -> list[str]:
        """Every catalog row still RUNNING or PENDING: backups, their steps, their copies."""
        rows = self.query(
            "SELECT 'backup ' || id FROM backup_history WHERE status IN ('running', 'pending') "
            "UNION ALL SELECT name || ' step of backup ' || backup_id FROM backups_backupstep "
            "WHERE status = 'running' UNION ALL SELECT 'copy of backup ' || backup_id "
            "FROM backups_backupcopy WHERE status = 'pending'"
        )
        return sorted(row[0] for row in rows)

    def alerts(self, backup_id: int) -> list[tuple[str, str]]:
        return self.query("SELECT event, status FROM backups_notification WHERE backup_id = %s", backup_id)

    def objects(self) -> list[str]:
        """Every object in both storages (the bucket asked of moto directly, not through the proxy)."""
        listing = self.s3.client().list_objects_v2(Bucket=self.bucket).get("Contents", [])
        local = self.root / "local"
        files = [f"local:{p.relative_to(local)}" for p in local.rglob("*") if p.is_file()]
        return sorted(files + [f"offsite:{item['Key']}" for item in listing])

    def watch(self) -> dict[str, int]:
        return dict(self.json("backup_watch"))

    def reconcile(self) -> list[dict[str, Any]]:
        return list(self.json("backup_reconcile"))

    def backup(self) -> dict[str, Any]:
        (row,) = self.json("backup_create", "--target", "app-db")
        return dict(row)


@pytest.fixture(scope="module")
def site(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("catalog-outage")
    source = fill_sqlite(root / "app.sqlite3", rows=10)
    with contextlib.closing(sqlite3.connect(source)) as db:
        db.execute("CREATE TABLE blobs (data BLOB)")
        db.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(256 * 1024),) for _ in range(24)])
        db.commit()
    bucket = f"catalog-outage-{os.getpid()}"
    s3_server.client().create_bucket(Bucket=bucket)
    with running_postgres() as pg, cuttable_proxy(s3_server.host, s3_server.port) as proxy:
        pg.create_database(CATALOG)
        passfile = root / "pgpass"
        passfile.write_text(pgpass_line(pg.password))
        passfile.chmod(0o600)
        offsite = {
            "kind": "s3", "bucket": bucket, "endpoint_url": f"http://{proxy.host}:{proxy.port}",
            "region": s3_server.region, "addressing_style": "path", "part_size_mib": 5,
            "access_key": "${TEST_S3_ACCESS_KEY}", "secret_key": "${TEST_S3_SECRET_KEY}",
        }  # fmt: skip
        config = write_config(
            root / "backupsite.toml",
            storage_dir=root / "local",
            storages={"offsite": offsite},
            notifiers={"audit": {"kind": "audit", "path": root / "alerts.jsonl", "default": True}},
            targets={
                "app-db": {
                    "engine": "sqlite", "database": source, "compression": "none",
                    "storages": ["local", "offsite"],
                }
            },
        )  # fmt: skip
        env = {
            **os.environ,
            "BACKUPSITE_HOME": str(root / "home"),
            "DJANGO_SETTINGS_MODULE": "backupsite.settings",
            "DATABASE_URL": f"postgres://{pg.user}@{pg.host}:{pg.port}/{CATALOG}",
            "PGPASSFILE": str(passfile),
            "TEST_S3_ACCESS_KEY": s3_server.access_key,
            "TEST_S3_SECRET_KEY": s3_server.secret_key,
            "BACKUPSITE_HEARTBEAT_SECONDS": "1",
            "BACKUPSITE_HEARTBEAT_STALE_SECONDS": "3",
        }
        site = Site(root, env, pg, s3_server, bucket, proxy)
        for args in (("migrate", "--noinput", "-v0"), ("backup_config", "apply", str(config))):
            result = site.manage(*args)
            assert result.returncode == 0, result.stdout + result.stderr
        yield site


def secrets_of(site: Site) -> list[str]:
    return [site.pg.password, site.s3.secret_key]


# -- restarted while the run goes on -------------------------------------------------------------


@pytest.fixture(scope="module")
def restarted(site: Site) -> dict[str, Any]:
    """``-m fast`` stop during the S3 upload (SLOW_UPLOAD), started again a second later while
    the process still uploads; the heartbeat watched; then the process's end, a watch pass,
    reconcile and the next run."""
    seen: dict[str, Any] = {}
    site.proxy.throttle(SLOW_UPLOAD, downstream=False)
    victim = site.start("backup_create", "--target", "app-db")
    try:
        backup_id = site.wait_for_step(victim, "upload", "storage offsite")
        site.wait_for_heartbeat(victim, backup_id)  # its thread has a connection the stop breaks
        site.catalog(up=False)
        time.sleep(1)
        site.catalog(up=True)
        resumed = datetime.now(UTC)
        seen["beating again"] = False
        while victim.poll() is None and not seen["beating again"]:
            (beat,) = site.query("SELECT heartbeat_at FROM backup_history WHERE id = %s", backup_id)[0]
            seen["beating again"] = beat > resumed
            time.sleep(0.1)
        seen["still running when it beat again"] = victim.poll() is None
        seen["stdout"], seen["stderr"] = victim.communicate(timeout=60)
    finally:
        site.proxy.allow()
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    seen["status"] = victim.returncode
    seen["row"] = site.query(
        "SELECT status, error_message, file_path FROM backup_history WHERE id = %s", backup_id
    )[0]
    seen["running after the process"] = site.running()
    seen["objects after the process"] = site.objects()
    seen["watch"] = site.watch()
    seen["running after the watch"] = site.running()
    seen["alerts"] = site.alerts(backup_id)
    seen["next"] = site.backup()
    seen["reconcile"] = site.reconcile()
    seen["objects in the end"] = site.objects()
    return seen


def test_it_fails_a_run_whose_catalog_restarted_mid_upload_saying_so_and_alerts_once(
    restarted: dict[str, Any],
) -> None:
    seen = restarted
    assert seen["status"] == 1
    status, error, _ = seen["row"]
    assert status == "failed"
    assert re.fullmatch(
        r"the catalog database stopped answering during the run \(.+\); nothing it stored was kept", error
    ), error
    # Recorded by the run itself, steps and copies included: nothing left for the watch.
    assert seen["running after the process"] == []
    assert seen["watch"]["lost"] == 0 and seen["running after the watch"] == []
    assert seen["alerts"] == [("backup_failed", "sent")]


def test_it_resumes_the_heartbeat_once_the_restarted_catalog_is_back(restarted: dict[str, Any]) -> None:
    # Found silent for good (a broken connection never recovers), so a live run would have been
    # reaped as lost; fixed: a failed touch closes the connection, the next one opens a new one.
    assert restarted["beating again"] and restarted["still running when it beat again"]


def test_it_keeps_nothing_of_the_run_the_catalog_lost_and_the_next_run_succeeds(
    restarted: dict[str, Any],
) -> None:
    seen = restarted
    assert seen["objects after the process"] == []
    assert seen["next"]["status"] == "success", seen["next"]
    new = seen["next"]["file_path"]
    expected = [
        f"{where}:{new}{suffix}" for where in ("local", "offsite") for suffix in ("", ".manifest.json")
    ]
    assert seen["objects in the end"] == sorted(expected)
    assert [report["clean"] for report in seen["reconcile"]] == [True, True], seen["reconcile"]


def test_it_reports_a_catalog_restart_in_log_lines_without_a_traceback_or_a_secret(
    restarted: dict[str, Any], site: Site
) -> None:
    lines = restarted["stderr"].splitlines()
    assert lines[-1] == "CommandError: 1 of 1 backup(s) failed"
    assert all(LOG_LINE.fullmatch(line) for line in lines[:-1]), lines
    assert any("heartbeat not recorded" in line for line in lines)
    for secret in secrets_of(site):
        assert secret not in restarted["stderr"] + restarted["stdout"]


# -- down when the run ends ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def down_at_the_end(site: Site) -> dict[str, Any]:
    """``-m fast`` stop while both committed copies are read back (SLOW_READ from the
    bucket); the process ends while the catalog is down; the catalog started afterwards; two
    watch passes, reconcile and the next run."""
    seen: dict[str, Any] = {}
    seen["objects before"] = site.objects()
    site.proxy.throttle(SLOW_READ, upstream=False)
    victim = site.start("backup_create", "--target", "app-db")
    try:
        backup_id = site.wait_for_step(victim, "verify")
        site.catalog(up=False)
        seen["stdout"], seen["stderr"] = victim.communicate(timeout=60)
        seen["objects after the process"] = site.objects()
    finally:
        site.proxy.allow()
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        site.catalog(up=True)
    seen["status"] = victim.returncode
    seen["id"] = backup_id
    seen["running after the process"] = site.running()
    seen["watch"] = site.watch()
    seen["running after the watch"] = site.running()
    seen["watch again"] = site.watch()
    seen["row"] = site.query(
        "SELECT status, error_message, file_path FROM backup_history WHERE id = %s", backup_id
    )[0]
    seen["alerts"] = site.alerts(backup_id)
    seen["next"] = site.backup()
    seen["reconcile"] = site.reconcile()
    seen["objects in the end"] = site.objects()
    return seen


def test_it_ends_with_one_line_and_status_1_when_the_catalog_is_down_at_the_end_of_a_run(
    down_at_the_end: dict[str, Any], site: Site
) -> None:
    seen = down_at_the_end
    assert seen["status"] == 1
    lines = seen["stderr"].splitlines()
    assert re.fullmatch(
        rf"CommandError: backup {seen['id']} of target app-db failed and the catalog database cannot "
        r"record it \(.+\); nothing it stored was kept; the next watch marks it failed",
        lines[-1],
    ), lines[-1]
    assert all(LOG_LINE.fullmatch(line) for line in lines[:-1]), lines
    for secret in secrets_of(site):
        assert secret not in seen["stderr"] + seen["stdout"]


def test_it_removes_every_committed_copy_before_exiting_when_the_catalog_is_down(
    down_at_the_end: dict[str, Any],
) -> None:
    # Found: the first copy removed, then its row's save failed and the second copy stayed
    # (until a watch); fixed: every storage is cleared before any copy row is written.
    assert down_at_the_end["objects after the process"] == down_at_the_end["objects before"]


def test_it_reaps_the_run_the_catalog_lost_once_and_the_next_run_succeeds(
    down_at_the_end: dict[str, Any],
) -> None:
    seen = down_at_the_end
    backup = f"backup {seen['id']}"
    assert seen["running after the process"] == sorted(
        [backup, f"copy of {backup}", f"copy of {backup}", f"verify step of {backup}"]
    )
    assert seen["watch"]["lost"] == 1 and seen["running after the watch"] == []
    assert seen["watch again"]["lost"] == 0
    status, error, lost_path = seen["row"]
    assert status == "failed" and error.startswith("worker lost: "), error
    assert not [key for key in seen["objects in the end"] if lost_path in key]
    assert seen["alerts"] == [("backup_failed", "sent")]  # one, though the watch ran twice
    assert seen["next"]["status"] == "success", seen["next"]
    assert [report["clean"] for report in seen["reconcile"]] == [True, True], seen["reconcile"]
