"""A backup process that is killed never leaves a half-done backup behind or a target stuck."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture
def slow_target(manage, tmp_path: Path, toml_config: Callable[..., Path]) -> dict[str, object]:
    """A files target big enough (random, so gzip is slow) to be killed mid-stream."""
    source = tmp_path / "bulk"
    source.mkdir()
    with (source / "random.bin").open("wb") as out:
        for _ in range(48):
            out.write(os.urandom(4 * 1024 * 1024))
    config = toml_config(targets={"bulk": {"engine": "files", "paths": [source], "storages": ["local"]}})
    assert manage("backup_config", "apply", str(config)).returncode == 0
    env = {
        **os.environ,
        "BACKUPSITE_HOME": str(tmp_path / "home"),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
    }
    env["BACKUPSITE_CHUNK_SIZE"] = str(256 * 1024)
    return {"env": env, "catalog": tmp_path / "home" / "backupsite.sqlite3", "storage": tmp_path / "backups"}


def start_backup(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "backup_create", "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for_progress(catalog: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with sqlite3.connect(catalog, timeout=30) as db:
            row = db.execute(
                "SELECT status, progress FROM backup_history ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row and row[0] == "running" and row[1] > 0:
            return
        time.sleep(0.05)
    pytest.fail("the backup never reported progress")


def rows(catalog: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(catalog) as db:
        return list(db.execute("SELECT status, error_message FROM backup_history ORDER BY id"))


def files_in(storage: Path) -> list[str]:
    return sorted(str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file())


def test_it_fails_the_run_on_sigterm_and_removes_the_partial_file(slow_target, manage):
    process = start_backup(slow_target["env"])
    wait_for_progress(slow_target["catalog"], process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode != 0
    assert rows(slow_target["catalog"]) == [("failed", "stopped: terminated by SIGTERM")]
    assert files_in(slow_target["storage"]) == []


def test_it_reaps_a_killed_run_as_worker_lost_and_the_next_run_succeeds(slow_target, manage):
    process = start_backup(slow_target["env"])
    wait_for_progress(slow_target["catalog"], process)
    process.kill()
    process.communicate(timeout=60)
    leftovers = files_in(slow_target["storage"])
    assert len(leftovers) == 1 and ".partial-" in leftovers[0]  # only ever a temporary name

    result = manage("backup_create", "--json", extra_env={"BACKUPSITE_CHUNK_SIZE": str(1024 * 1024)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["status"] == "success"
    (lost_status, lost_message), (next_status, _) = rows(slow_target["catalog"])
    assert lost_status == "failed"
    assert lost_message.startswith("worker lost: process ") and "ended without finishing" in lost_message
    assert next_status == "success"
    assert not any(".partial-" in name for name in files_in(slow_target["storage"]))
