"""Logs (issue 20, "Hardened settings"): ``LOG_FORMAT=json`` writes one JSON object per line with
the run's id, target and step, and the Celery worker and beat (whose own handlers replace
Django's) carry the secret-redacting filter, in both formats.

The worker tests run a real worker against the real PostgreSQL of ``pg_server``: a backup whose
password reference resolves to a wrong password fails there, and a probe task (a module the
worker imports with ``-I``) resolves the same reference and logs the value outright, then raises
with it in its message, so both the line and Celery's own traceback of the failed task hold the
secret unless the filter masks it. The secret's value must appear in no file of the site.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backups import services
from backups.logs import JsonFormatter, current_context, log_context
from backups.models import BackupStatus, Storage, Target
from backups.secrets import RedactingFilter, remember
from tests.celery_site import Site, wait_until
from tests.conftest import REPO
from tests.servers.postgres import PostgresServer

LEAK_ENV = "JSON_LOGS_PG_PASSWORD"
PROBE = """
import logging

from backupsite.celery import app


@app.task(name="leak_probe.log_secret")
def log_secret(reference):
    from backups.secrets import resolve

    value = resolve(reference)
    logging.getLogger("backups.leak_probe").error("probe resolved the password: %s", value)
    raise RuntimeError(f"probe failed with {value}")
"""


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the ``backups`` loggers write, through the settings' JSON formatter and filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("backups")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def entries(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_it_writes_one_json_object_per_line_with_the_run_context(json_log: io.StringIO) -> None:
    logger = logging.getLogger("backups.example")
    logger.info("before")
    with log_context(backup_id=7, target="app-db"), log_context(step="dump"):
        logger.warning("copy %s failed:\nsecond line", "s3")
    logger.info("after")
    before, inside, after = entries(json_log.getvalue())
    assert len(json_log.getvalue().splitlines()) == 3
    assert set(before) == {"time", "level", "logger", "process", "message"}
    assert before["logger"] == "backups.example" and before["level"] == "INFO"
    assert str(before["time"]).endswith("+00:00")
    assert inside["message"] == "copy s3 failed:\nsecond line"
    assert (inside["backup_id"], inside["target"], inside["step"]) == (7, "app-db", "dump")
    assert "backup_id" not in after


def test_it_puts_the_traceback_in_one_field_with_secrets_masked(json_log: io.StringIO) -> None:
    secret = "planted-" + secrets.token_hex(8)
    remember(secret)  # as resolving a reference does
    try:
        raise RuntimeError(f"connecting with {secret} failed")
    except RuntimeError:
        logging.getLogger("backups.example").exception("it broke using %s", secret)
    (entry,) = entries(json_log.getvalue())
    assert entry["message"] == "it broke using ********"
    exception = str(entry["exception"])
    assert "Traceback" in exception and "connecting with ******** failed" in exception
    assert secret not in json_log.getvalue()


def test_it_keeps_a_failed_step_until_the_run_ends() -> None:
    with log_context(backup_id=1, target="t"):
        with log_context(step="validate", keep_on_error=True):
            assert current_context()["step"] == "validate"
        assert "step" not in current_context()  # a step that succeeded ends with its block
        with pytest.raises(ValueError), log_context(step="dump", keep_on_error=True):
            raise ValueError
        assert current_context() == {"backup_id": 1, "target": "t", "step": "dump"}
    assert current_context() == {}
    with pytest.raises(ValueError), log_context(step="verify", keep_on_error=True):
        raise ValueError  # outside a run: nothing stays behind for the next task's lines
    assert current_context() == {}


@pytest.mark.django_db
def test_it_tags_the_lines_of_a_real_run(
    json_log: io.StringIO, local_storage: Storage, tmp_path: Path
) -> None:
    target = Target.objects.create(
        name="gone-db", engine="sqlite", database=str(tmp_path / "missing.sqlite3")
    )
    target.storages.add(local_storage)
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    lines = entries(json_log.getvalue())
    started = next(line for line in lines if "started" in str(line["message"]))
    failed = next(line for line in lines if "failed" in str(line["message"]))
    assert (started["backup_id"], started["target"], "step" not in started) == (backup.pk, "gone-db", True)
    assert (failed["backup_id"], failed["target"], failed["step"]) == (backup.pk, "gone-db", "validate")
    assert current_context() == {}


# -- a real worker ------------------------------------------------------------------------------------


@dataclass
class LeakSite(Site):
    """A site whose processes hold the wrong password in LEAK_ENV and import the probe task."""

    password: str = ""
    probe_dir: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, LEAK_ENV: self.password, "PYTHONPATH": str(self.probe_dir)}

    def start_celery(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """A worker or beat whose log (stderr) goes to NAME.log and whose stdout (Celery's
        banner and shutdown notices, printed rather than logged) to NAME.out."""
        argv = [sys.executable, "-m", "celery", "-A", "backupsite", *args, "-l", "info"]
        with open(self.home / f"{name}.log", "ab") as log, open(self.home / f"{name}.out", "ab") as out:
            process = subprocess.Popen(
                argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process


def failed_run(site: Site) -> tuple[int, str] | None:
    with sqlite3.connect(site.catalog, timeout=30) as db:
        row = db.execute("SELECT id, status, error_message FROM backup_history").fetchone()
    db.close()
    return (row[0], row[2]) if row and row[1] == "failed" else None


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["json", "plain"])
def test_it_logs_a_workers_failing_run_without_its_secret(
    pg_server: PostgresServer, tmp_path: Path, log_format: str
) -> None:
    wrong_password = "wrong-" + secrets.token_urlsafe(18)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "leak_probe.py").write_text(PROBE)
    site = LeakSite(
        home=tmp_path / "site", broker_url="filesystem://", password=wrong_password, probe_dir=probe_dir,
        extra_env={"LOG_FORMAT": log_format},
    )  # fmt: skip
    site.home.mkdir()
    reference = "${" + LEAK_ENV + "}"
    try:
        site.manage("migrate", "--noinput", "-v0")
        site.manage(
            "shell", "-c",
            "from backups.models import Storage, Target; "
            f"s = Storage.objects.create(name='local', kind='local', options={{'path': {str(site.home / 'backups')!r}}}); "
            f"t = Target.objects.create(name='pg-wrong', engine='postgresql', host={pg_server.host!r}, "
            f"port={pg_server.port}, user={pg_server.user!r}, password={reference!r}, database='postgres', "
            "options={'connect_timeout': 5}); t.storages.add(s)",
        )  # fmt: skip
        node = f"json-logs-{uuid.uuid4().hex[:8]}@%h"
        site.start_celery("worker", "worker", "-c", "1", "-n", node, "-I", "leak_probe")
        site.start_celery(
            "beat", "beat", "--pidfile", str(site.home / "beat.pid"), "-s", str(site.home / "sched")
        )
        site.manage(
            "shell", "-c",
            "from backupsite.celery import app; from backups.tasks import run_target_backup; "
            f"run_target_backup.delay(1); app.send_task('leak_probe.log_secret', args=[{reference!r}])",
        )  # fmt: skip
        run_id, error = wait_until(lambda: failed_run(site), "the run to fail on the worker", 120)
        wait_until(lambda: "probe failed with" in site.log("worker"), "the probe's failure", 120)
        wait_until(lambda: "beat: Starting..." in site.log("beat"), "beat to start", 60)
    finally:
        site.stop_all()
    assert "authentication failed" in error
    worker, beat = site.log("worker"), site.log("beat")
    if log_format == "json":
        lines = [json.loads(line) for line in worker.splitlines()]  # every line: one object
        beat_lines = [json.loads(line) for line in beat.splitlines()]
        assert any(line["message"] == "beat: Starting..." for line in beat_lines)
        failure = next(
            line for line in lines if line["logger"] == "backups.runs.service" and "failed" in line["message"]
        )
        assert (failure["level"], failure["backup_id"], failure["target"], failure["step"]) == (
            "WARNING", run_id, "pg-wrong", "validate",
        )  # fmt: skip
        probe = next(line for line in lines if line["logger"] == "backups.leak_probe")
        assert probe["message"] == "probe resolved the password: ********"
        task = next(line for line in lines if "raised unexpected" in line["message"])
        assert "probe failed with ********" in task["message"] + task["exception"]
        assert "Traceback" in task["exception"]
    else:
        assert "ERROR/ForkPoolWorker-1] probe resolved the password: ********" in worker
        assert "RuntimeError: probe failed with ********" in worker  # Celery's own traceback
        assert "INFO/MainProcess] beat: Starting..." in beat  # Celery's format, unchanged
    holding = [
        str(path.relative_to(site.home))
        for path in site.home.rglob("*")
        if path.is_file() and wrong_password.encode() in path.read_bytes()
    ]
    assert holding == []  # the worker's and beat's logs, the catalog, the broker's messages
