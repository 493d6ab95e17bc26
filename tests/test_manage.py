"""manage.py's quick exit keeps everything a normal exit promises: output, status, exit handlers,
threads' work, and Django's own error reporting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO

Manage = Callable[..., subprocess.CompletedProcess[str]]


def shell(manage: Manage, code: str) -> subprocess.CompletedProcess[str]:
    return manage("shell", "--no-imports", "-c", code)


def test_it_writes_complete_output_through_a_pipe_with_status_zero(manage: Manage) -> None:
    result = shell(manage, "import sys; sys.stdout.write('x' * 300_000); sys.stderr.write('e' * 70_000)")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "x" * 300_000
    assert result.stderr == "e" * 70_000


def test_it_keeps_a_numeric_exit_status(manage: Manage) -> None:
    result = shell(manage, "print('before'); import sys; sys.exit(3)")
    assert (result.returncode, result.stdout) == (3, "before\n")


def test_it_prints_a_message_given_to_exit_with_status_one(manage: Manage) -> None:
    result = shell(manage, "import sys; sys.exit('cannot go on: reason')")
    assert result.returncode == 1
    assert "cannot go on: reason" in result.stderr


def test_it_runs_exit_handlers(manage: Manage, tmp_path: Path) -> None:
    marker = tmp_path / "atexit"
    result = shell(
        manage,
        "import atexit, logging, pathlib\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')\n"
        f"handler = logging.FileHandler({str(tmp_path / 'log')!r}, delay=True)\n"
        "logging.getLogger('quick-exit').addHandler(handler)\n"
        "logging.getLogger('quick-exit').warning('last words')\n",
    )
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "ran"
    assert (tmp_path / "log").read_text() == "last words\n"


def test_it_waits_for_a_thread_still_working(manage: Manage, tmp_path: Path) -> None:
    marker = tmp_path / "thread"
    result = shell(
        manage,
        "import pathlib, threading, time\n"
        "def work():\n"
        "    time.sleep(0.5)\n"
        f"    pathlib.Path({str(marker)!r}).write_text('done')\n"
        "threading.Thread(target=work).start()\n",
    )
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "done"


def test_it_reports_command_errors_and_unknown_commands_as_django_does(manage: Manage) -> None:
    failed = manage("backup_restore", "--id", "424242", "--to", "nowhere", "--yes")
    assert failed.returncode != 0
    assert "no backup with id 424242" in failed.stderr
    unknown = manage("no_such_command")
    assert unknown.returncode == 1
    assert "Unknown command: 'no_such_command'" in unknown.stderr


def test_it_lets_django_report_broken_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "help"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "no_such_settings_module"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "settings are not properly configured (error: No module named 'no_such_settings_module')" in (
        result.stdout + result.stderr
    )


def test_it_still_gives_a_profiler_its_report(tmp_path: Path) -> None:
    stats = tmp_path / "profile.out"
    result = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(stats), str(REPO / "manage.py"), "version"],
        cwd=REPO,
        env={**os.environ, "BACKUPSITE_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert stats.stat().st_size > 0


def test_it_runs_the_collector_again_after_start_up_with_start_ups_objects_frozen(manage: Manage) -> None:
    result = shell(manage, "import gc; print(gc.isenabled(), gc.get_freeze_count() > 10_000)")
    assert result.stdout == "True True\n", result.stderr
