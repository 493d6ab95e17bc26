"""An alert lost to a SIGKILL (issue 18, found by the soak): a run that recorded FAILED and died
before its alert went out. Two moments, each with a real ``manage.py backup_create`` process
killed by SIGKILL against a real PostgreSQL catalog and a real HTTP receiver (the webhook
channel):

- after the run recorded FAILED, before any delivery row was written: the test holds an
  EXCLUSIVE lock on the notifications table (reads go on, inserts wait), kills the process once
  its insert waits for the lock, ends its server session, then lets go;
- after the delivery row was written PENDING, while the webhook request is on its way: the
  receiver holds the request unanswered and the process is killed once the request arrived.

Invariant: the next watch pass sends the alert once through its own channel, says it is late,
records the delivery SENT, and a second pass sends nothing more.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backups.engines.postgresql.engine import pgpass_line
from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite
from tests.reliability.kill import kill_when
from tests.servers.http_receiver import HTTPReceiver, running_receiver
from tests.servers.postgres import PostgresServer

CATALOG = "lost_alerts"


@dataclass
class Site:
    root: Path
    env: dict[str, str]
    pg: PostgresServer
    receiver: HTTPReceiver

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def start_failing_run(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "backup_create", "--target", "gone"],
            cwd=REPO, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        return self.pg.execute(CATALOG, sql, params or None)

    def watch(self) -> dict[str, int]:
        result = self.manage("backup_watch", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return dict(json.loads(result.stdout))

    def alerts(self) -> list[dict[str, Any]]:
        """The backup_failed messages the receiver heard."""
        bodies = [request.json() for request in self.receiver.requests]
        return [body for body in bodies if body.get("event") == "backup_failed"]


@pytest.fixture
def site(pg_server: PostgresServer, tmp_path: Path) -> Iterator[Site]:
    if pg_server.database_exists(CATALOG):
        pg_server.drop_database(CATALOG)
    pg_server.create_database(CATALOG)
    passfile = tmp_path / "pgpass"
    passfile.write_text(pgpass_line(pg_server.password))
    passfile.chmod(0o600)
    source = fill_sqlite(tmp_path / "gone.sqlite3", rows=3)
    with running_receiver() as receiver:
        config = write_config(
            tmp_path / "backupsite.toml",
            storage_dir=tmp_path / "local",
            notifiers={
                "hook": {"kind": "webhook", "url": "${TEST_HOOK_URL}", "retry_delays": [], "default": True}
            },
            targets={"gone": {"engine": "sqlite", "database": source}},
        )
        env = {
            **os.environ,
            "BACKUPSITE_HOME": str(tmp_path / "home"),
            "DJANGO_SETTINGS_MODULE": "backupsite.settings",
            "DATABASE_URL": f"postgres://{pg_server.user}@{pg_server.host}:{pg_server.port}/{CATALOG}",
            "PGPASSFILE": str(passfile),
            "TEST_HOOK_URL": receiver.url(),
        }
        site = Site(tmp_path, env, pg_server, receiver)
        for args in (("migrate", "--noinput", "-v0"), ("backup_config", "apply", str(config))):
            result = site.manage(*args)
            assert result.returncode == 0, result.stdout + result.stderr
        source.unlink()  # every run of "gone" now fails at once: its database file is missing
        yield site
    pg_server.drop_database(CATALOG)


def check_sent_once_by_the_watch(site: Site, backup_id: int) -> None:
    assert site.watch()["alerts_resent"] == 1
    (alert,) = site.alerts()
    assert alert["text"].startswith(f"Backup {backup_id} ") and " of gone failed: " in alert["text"], alert
    assert "sent late" in alert["fields"], alert
    rows = site.query("SELECT status, sender FROM backups_notification WHERE backup_id = %s", backup_id)
    assert rows == [("sent", "")]
    assert site.query("SELECT alert_pending FROM backup_history WHERE id = %s", backup_id) == [(False,)]
    assert site.watch()["alerts_resent"] == 0  # once
    assert len(site.alerts()) == 1


@pytest.mark.slow
def test_it_sends_the_alert_of_a_run_killed_after_it_recorded_failed_before_any_delivery_row(
    site: Site,
) -> None:
    with contextlib.closing(site.pg.connect(CATALOG)) as lock, lock.transaction():
        lock.execute("LOCK TABLE backups_notification IN EXCLUSIVE MODE")  # held to the block's end
        process = site.start_failing_run()

        def inserting() -> bool:
            waiting = site.query(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                "AND query LIKE 'INSERT INTO \"backups_notification\"%%'",
                CATALOG,
            )
            return bool(waiting)

        kill_when(process, inserting, "its alert's delivery row")
        # The killed client's server session would finish the waiting insert: end it too, as
        # the server does when it notices the client is gone.
        site.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            CATALOG,
        )
    ((backup_id, status, pending),) = site.query("SELECT id, status, alert_pending FROM backup_history")
    assert (status, pending) == ("failed", True)
    assert site.query("SELECT count(*) FROM backups_notification") == [(0,)]
    assert site.alerts() == []
    check_sent_once_by_the_watch(site, backup_id)


@pytest.mark.slow
def test_it_sends_the_alert_of_a_run_killed_while_its_delivery_was_on_its_way(site: Site) -> None:
    site.receiver.hang_next(1, seconds=120)  # the first request is held unanswered
    process = site.start_failing_run()
    kill_when(process, lambda: len(site.receiver.requests) == 1, "its alert's webhook request")
    ((backup_id, pending),) = site.query("SELECT id, alert_pending FROM backup_history")
    ((status, sender),) = site.query("SELECT status, sender FROM backups_notification")
    assert status == "pending" and sender.endswith(f":{process.pid}") and pending is True
    site.receiver.requests.clear()  # the held request never got its answer: not delivered
    # Both records of the unsent alert (the run's flag, the PENDING row) make one message.
    check_sent_once_by_the_watch(site, backup_id)
