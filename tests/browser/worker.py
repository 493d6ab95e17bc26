"""A real Celery worker for browser tests, in a thread of the test process.

The web view queues a task on the project's broker (the embedded filesystem transport under the
test home, as under ``make run``); this worker consumes it and runs the task. The test database is
SQLite in memory, which only this process can see, so the worker thread is handed the same
connection the live server thread uses (as Django's LiveServerThread itself is).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_prerun
from django.db import connections

from backupsite.celery import app


@pytest.fixture
def celery_worker(live_url: str) -> Iterator[object]:
    shared = {
        conn.alias: conn
        for conn in connections.all()
        if conn.vendor == "sqlite" and conn.is_in_memory_db()  # type: ignore[attr-defined]
    }

    def use_shared_connections(**_: Any) -> None:
        for alias, conn in shared.items():
            connections[alias] = conn

    app.control.purge()  # tasks queued by earlier tests without a worker
    for conn in shared.values():
        conn.inc_thread_sharing()
    task_prerun.connect(use_shared_connections, weak=False)
    try:
        with start_worker(app, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=60) as worker:
            yield worker
    finally:
        task_prerun.disconnect(use_shared_connections)
        # The sharing stays on: the live server's request threads may still close the connection.
