"""The process supervisor behind ``backupsite_run``, with small stand-in children: prefixed
output, a graceful stop that kills what does not stop in time, and failure when a child dies."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

import pytest

from schedules.supervisor import ChildSpec, Supervisor, SupervisorError, site_children
from tests.conftest import REPO

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
POLITE = "import time; print('hello\\nworld', flush=True); time.sleep(60)"


def child(name: str, code: str) -> ChildSpec:
    return ChildSpec(name, [sys.executable, "-c", code])


def interrupt_when(out: io.StringIO, text: str, times: int = 1) -> threading.Thread:
    """Send SIGINT to this process (the supervisor's main thread) once ``text`` is printed."""

    def run() -> None:
        deadline = time.monotonic() + 30
        while text not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_it_prefixes_output_and_kills_a_child_that_ignores_sigterm_after_the_timeout():
    out = io.StringIO()
    supervisor = Supervisor(
        [child("polite", POLITE), child("stubborn", STUBBORN)], out, cwd=REPO, stop_timeout=1
    )
    interrupt_when(out, "stubborn   | up")
    started = time.monotonic()
    supervisor.run()
    log = out.getvalue()
    assert "polite     | hello\npolite     | world\n" in log
    assert "stubborn did not stop in time; killing it" in log
    assert "polite stopped (signal SIGTERM)" in log and "stubborn stopped (signal SIGKILL)" in log
    assert time.monotonic() - started < 15
    assert all(c.process.poll() is not None for c in supervisor.children)


def test_it_kills_at_once_on_a_second_ctrl_c():
    out = io.StringIO()
    supervisor = Supervisor([child("stubborn", STUBBORN)], out, cwd=REPO, stop_timeout=60)
    interrupt_when(out, "stubborn   | up", times=2)
    started = time.monotonic()
    supervisor.run()
    assert time.monotonic() - started < 10
    assert "stubborn stopped (signal SIGKILL)" in out.getvalue()


def test_it_stops_the_others_and_fails_when_a_child_exits():
    out = io.StringIO()
    supervisor = Supervisor(
        [child("polite", POLITE), child("short", "import sys; sys.exit(3)")], out, cwd=REPO, stop_timeout=5
    )
    with pytest.raises(
        SupervisorError, match=r"short \(pid \d+\) exited unexpectedly with exit status 3; stopped polite"
    ):
        supervisor.run()
    assert all(c.process.poll() is not None for c in supervisor.children)


def test_it_fails_cleanly_when_a_child_cannot_start(tmp_path):
    out = io.StringIO()
    supervisor = Supervisor(
        [child("polite", POLITE), ChildSpec("ghost", [str(tmp_path / "missing")])], out, cwd=REPO
    )
    with pytest.raises(SupervisorError, match="cannot start ghost"):
        supervisor.run()
    assert all(c.process.poll() is not None for c in supervisor.children)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_it_runs_the_site_children_with_this_interpreter_and_keeps_beat_files_in_the_home(tmp_path):
    specs = site_children(base_dir=REPO, home=tmp_path, bind="127.0.0.1:9", concurrency=3, node_name="n@%h")
    assert [spec.name for spec in specs] == ["web", "worker", "watch", "beat"]
    assert all(spec.argv[0] == sys.executable for spec in specs)
    worker, beat = specs[1].argv, specs[3].argv
    assert option(worker, "-c") == "3" and option(worker, "-n") == "n@%h"
    assert option(beat, "--pidfile") == str(tmp_path / "beat.pid")
    assert option(beat, "-S") == "schedules.beat:DatabaseScheduler"
    no_web = site_children(base_dir=REPO, home=tmp_path, bind=None, concurrency=1, node_name="n@%h")
    assert [spec.name for spec in no_web] == ["worker", "watch", "beat"]


def test_it_gives_the_watch_a_worker_of_its_own_that_backups_never_keep_busy(tmp_path):
    """The backups' worker consumes only the default queue; the watch's worker only the queue the
    settings route the watch and the sweep to, with one process and a node name of its own."""
    from backupsite.celery import app

    specs = site_children(base_dir=REPO, home=tmp_path, bind=None, concurrency=4, node_name="n@%h")
    worker, watch = (spec.argv for spec in specs if spec.name in ("worker", "watch"))
    assert worker[1:6] == watch[1:6] == ["-m", "celery", "-A", "backupsite", "worker"]
    assert option(worker, "-Q") == app.conf.task_default_queue == "celery"
    assert option(watch, "-Q") == "watch" and option(watch, "-c") == "1"
    assert option(watch, "-n") == "watch-n@%h"
    for task in ("schedules.tasks.watch", "backups.tasks.sweep_leftovers"):
        assert app.amqp.router.route({}, task)["queue"].name == "watch"
    assert app.amqp.router.route({}, "schedules.tasks.run_schedule")["queue"].name == "celery"
