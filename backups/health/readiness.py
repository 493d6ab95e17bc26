"""Readiness (``/readyz``): can this site do its work now? One check each for the catalog
database, the Celery broker, beat's last tick, and every storage.

Each check gives a name, ok or failed, and a detail for operators (already redacted:
``secrets.redact``). The details name hosts, paths and errors, so the view shows them only to
staff and metrics readers; anonymous callers get names and ok/failed. Storage probes are the
config validator's (``check_writable`` on the storage built as a run builds it), cached per
process for :data:`STORAGE_CACHE_SECONDS`, run in threads and waited for at most
:data:`STORAGE_TIMEOUT_SECONDS`: a hung storage fails readiness, it does not hang the probe.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from kombu import Connection

from backups import secrets
from backups.health.heartbeats import heartbeat_seen
from backups.models import Storage
from backups.resources import storage_for
from backups.runs.steps import describe_error

logger = logging.getLogger(__name__)

OK = "ok"
FAILED = "failed"
BEAT_ROLE = "beat"  # the role schedules.beat writes
BROKER_TIMEOUT_SECONDS = 3.0
STORAGE_CACHE_SECONDS = 60.0
STORAGE_TIMEOUT_SECONDS = 10.0
_FILESYSTEM_FOLDERS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""  # for operators only (hosts, paths, errors), redacted


@dataclass(frozen=True)
class Readiness:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self, *, details: bool) -> dict[str, Any]:
        """The JSON body: overall status and one entry per check; the details only when asked."""
        entries: dict[str, dict[str, str]] = {}
        for check in self.checks:
            entry = {"status": OK if check.ok else FAILED}
            if details:
                entry["detail"] = check.detail
            entries[check.name] = entry
        return {"status": OK if self.ok else FAILED, "checks": entries}


def readiness(now: datetime | None = None) -> Readiness:
    """Every check, in a fixed order: database, broker, beat, then the storages by name."""
    checks = [check_database(), check_broker(), check_beat(now)]
    checks.extend(check_storages())
    return Readiness(tuple(checks))


def _failed(name: str, what: str, exc: BaseException) -> Check:
    return Check(name, False, secrets.redact(f"{what}: {describe_error(exc)}"))


def check_database() -> Check:
    """A trivial query on the catalog."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return _failed("database", f"the catalog ({connection.vendor}) does not answer", exc)
    return Check("database", True, f"the catalog ({connection.vendor}) answers")


def check_broker() -> Check:
    """kombu's filesystem transport: its folders exist and are writable; any other transport:
    a connection within BROKER_TIMEOUT_SECONDS, without retries."""
    url = settings.CELERY_BROKER_URL
    options = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {})
    if url.startswith("filesystem://"):
        folders = sorted({str(options[key]) for key in _FILESYSTEM_FOLDERS if options.get(key)})
        bad = [folder for folder in folders if not _writable_dir(folder)]
        if bad:
            return Check("broker", False, f"filesystem broker: not a writable folder: {', '.join(bad)}")
        return Check("broker", True, f"filesystem broker: {len(folders)} folders writable")
    where = _without_credentials(url)
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT_SECONDS, transport_options=options) as broker:
            broker.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # kombu raises the transport's own errors (redis, amqp, socket)
        return _failed("broker", f"cannot connect to {where}", exc)
    return Check("broker", True, f"connected to {where}")


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _without_credentials(url: str) -> str:
    """``scheme://host:port/path`` of a broker URL: never its user or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_beat(now: datetime | None = None) -> Check:
    """Beat's heartbeat is at most BACKUPSITE_BEAT_STALE_SECONDS old."""
    stale = settings.BACKUPSITE_BEAT_STALE_SECONDS
    try:
        seen = heartbeat_seen(BEAT_ROLE)
    except DatabaseError as exc:
        return _failed("beat", "cannot read beat's heartbeat", exc)
    if seen is None:
        return Check("beat", False, "beat has never ticked (no heartbeat in the catalog): is beat running?")
    seen_at, host = seen
    age = max(((now or timezone.now()) - seen_at).total_seconds(), 0.0)
    if age > stale:
        return Check(
            "beat",
            False,
            f"beat last ticked {age:.0f} s ago ({host}), more than BACKUPSITE_BEAT_STALE_SECONDS ({stale} s)",
        )
    return Check("beat", True, f"beat ticked {age:.0f} s ago ({host})")


# -- storages --------------------------------------------------------------------------------

# (storage pk, updated_at) -> (time.monotonic() of the probe's end, its check); an edited
# storage is probed afresh. And the probes under way, so a hung storage holds one thread only.
_probed: dict[tuple[int, datetime], tuple[float, Check]] = {}
_running: dict[tuple[int, datetime], Future[Check]] = {}
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def check_storages() -> list[Check]:
    """One check per storage (by name): cached, or probed now in parallel."""
    try:
        rows = list(Storage.objects.order_by("name"))
    except DatabaseError as exc:
        return [_failed("storages", "cannot list the storages", exc)]
    now = time.monotonic()
    waiting: dict[tuple[int, datetime], Future[Check]] = {}
    found: dict[tuple[int, datetime], Check] = {}
    with _lock:
        keys = {(row.pk, row.updated_at) for row in rows}
        for key in [key for key in _probed if key not in keys]:
            del _probed[key]  # a deleted or edited storage
        for row in rows:
            key = (row.pk, row.updated_at)
            cached = _probed.get(key)
            if cached is not None and now - cached[0] < STORAGE_CACHE_SECONDS:
                found[key] = cached[1]
            elif key in _running:
                waiting[key] = _running[key]
            else:
                waiting[key] = _running[key] = _pool().submit(_probe, row, key)
    wait_for(list(waiting.values()), timeout=STORAGE_TIMEOUT_SECONDS)
    checks = []
    for row in rows:
        key = (row.pk, row.updated_at)
        if key in found:
            checks.append(found[key])
        elif waiting[key].done():
            checks.append(waiting[key].result())
        else:
            detail = f"no answer within {STORAGE_TIMEOUT_SECONDS:.0f} s (still probing)"
            checks.append(Check(f"storage:{row.name}", False, detail))
    return checks


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz-storage")
    return _executor


def _probe(row: Storage, key: tuple[int, datetime]) -> Check:
    """The validator's probe of one storage: built with its secrets, a test object written and
    removed. Caches its result, and never raises."""
    name = f"storage:{row.name}"
    try:
        with storage_for(row) as storage:
            storage.check_writable()
        check = Check(name, True, f"{row.kind} storage writable")
    except Exception as exc:  # StorageError, SecretError, a client library's own: all "failed"
        logger.warning("readiness: storage %s: %s", row.name, secrets.redact(describe_error(exc)))
        check = _failed(name, f"{row.kind} storage not writable", exc)
    with _lock:
        _probed[key] = (time.monotonic(), check)
        _running.pop(key, None)
    return check


def forget_storage_probes() -> None:
    """Drop the cached probes (tests; an operator's fix shows at the next call)."""
    with _lock:
        _probed.clear()
