"""Restore drills: a backup restored into a scratch copy, checked, and dropped.

``run_drill`` picks a backup (the given one, else a random one of the target's last
``drill_from_last`` successes), re-reads every stored copy (a damaged one fails the drill before
anything is restored), restores into a scratch copy, runs the checks, drops the scratch copy
whatever happens, and records a :class:`Drill` row: each check with its expected and actual
value, the measured restore time and the data's age. Where the copy goes:

- engines with scratch databases (PostgreSQL, MySQL/MariaDB, ClickHouse): a database
  ``backupsite_drill_<backup>_<random>`` on the target's ``sandbox`` (required, of the same engine);
- SQLite, files and configuration backups: a directory ``drill-<backup>-<random>`` under
  BACKUPSITE_TMP;
- Redis: the engine's trial restore (a scratch redis-server it starts and stops itself); its
  summary is recorded as the one check, and custom SQL checks are refused.

The scratch name is recorded on the row before anything is created, so ``reap_lost_drills``
(called by the watch) can drop what a killed drill left behind. Two drills never use one sandbox
at the same time: the claim locks the sandbox's Target row and refuses while another drill into
it is RUNNING. Restores into a sandbox are not excluded: a drill's database name is new and
random, so a restore cannot name it by accident.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backups import secrets
from backups.audit import record as record_audit
from backups.engines import Connection, Engine, EngineError, get_engine
from backups.engines.base import ChainLink, RestoreOptions, RestoreResult
from backups.engines.configuration import ConfigurationEngine
from backups.models import (
    Backup,
    BackupCopy,
    BackupStatus,
    Drill,
    DrillStatus,
    Event,
    Outcome,
    Proof,
    Target,
)
from backups.notifications import notify
from backups.processes import process_gone, this_worker
from backups.proof import record_proof
from backups.resources import (
    ServiceError,
    connection_for,
    engine_for,
    restore_manifest,
    scratch_dir,
    stored_copies,
)
from backups.runs.chains import chain_of, load_manifest
from backups.runs.heartbeat import Heartbeat
from backups.runs.steps import describe_error
from backups.verification import check_copy_digest, check_sandbox, feed_copy

logger = logging.getLogger(__name__)

#: What an SQL check must return to pass (compared lower-cased).
TRUE_VALUES = ("t", "1", "true")
SCRATCH_DATABASE_PREFIX = "backupsite_drill_"
SCRATCH_DIRECTORY_PREFIX = "drill-"


class DrillRefused(ServiceError):
    """The drill cannot start now (another drill uses the sandbox); nothing was recorded."""


def check_timeout_seconds() -> float:
    """The statement timeout of each custom SQL check (BACKUPSITE_DRILL_CHECK_SECONDS, 60)."""
    return float(getattr(settings, "BACKUPSITE_DRILL_CHECK_SECONDS", 60))


def pick_drill_backup(target: Target) -> Backup | None:
    """A random one of ``target``'s last ``drill_from_last`` successful, not deleted backups
    that still have a stored copy (the newest when 1), or None."""
    candidates = list(
        Backup.objects.select_related("target")
        .filter(target=target, status=BackupStatus.SUCCESS, deleted_at__isnull=True, copies__status="stored")
        .distinct()
        .order_by("-started_at", "-id")[: max(1, target.drill_from_last)]
    )
    if not candidates:
        return None
    return candidates[0] if len(candidates) == 1 else random.choice(candidates)  # noqa: S311  (not a secret)


def _check(name: str, expected: Any, actual: Any, ok: bool) -> dict[str, Any]:
    return {"name": name, "expected": expected, "actual": actual, "ok": bool(ok)}


@dataclasses.dataclass
class _Plan:
    """Where one drill restores: a scratch database on ``sandbox``, a scratch directory, or the
    engine's trial restore (``trial``)."""

    engine: Engine
    sandbox: Target | None = None
    directory: Path | None = None
    trial: bool = False


def _plan(target: Target, backup: Backup) -> _Plan:
    """How ``backup`` is drilled; raises ServiceError (naming ``sandbox``) when it cannot be."""
    engine = engine_for(target, backup.backup_type)
    if backup.backup_type != "configuration" and engine.has_scratch_databases:
        sandbox = target.sandbox
        if sandbox is None:
            raise ServiceError(
                f"target {target.name} has no sandbox: set its sandbox to a {target.engine} target "
                "where drills may restore into a scratch database"
            )
        try:
            check_sandbox(engine, target, sandbox)
        except ServiceError as exc:
            raise ServiceError(f"sandbox: {exc}") from None
        return _Plan(engine=engine, sandbox=sandbox)
    if engine.key == "redis":
        return _Plan(engine=engine, trial=True)
    return _Plan(engine=engine, directory=scratch_dir())


def _claim(target: Target, backup: Backup, plan: _Plan, trigger: str, initiated_by: str) -> Drill:
    """The RUNNING row, with its scratch name, created while holding the sandbox's row lock."""
    token = os.urandom(4).hex()
    if plan.sandbox is not None:
        scratch = f"{SCRATCH_DATABASE_PREFIX}{backup.pk}_{token}"
    elif plan.directory is not None:
        scratch = str(plan.directory / f"{SCRATCH_DIRECTORY_PREFIX}{backup.pk}-{token}")
    else:
        scratch = ""
    now = timezone.now()
    with transaction.atomic():
        if plan.sandbox is not None:
            sandbox = Target.objects.select_for_update().get(pk=plan.sandbox.pk)
            running = Drill.objects.filter(sandbox=sandbox, status=DrillStatus.RUNNING).order_by("id").first()
            if running is not None:
                raise DrillRefused(
                    f"a drill into sandbox {sandbox.name} is running (drill {running.pk}); try again "
                    "when it has finished"
                )
        return Drill.objects.create(
            target=target,
            backup=backup,
            sandbox=plan.sandbox,
            scratch_name=scratch,
            status=DrillStatus.RUNNING,
            trigger=trigger,
            initiated_by=initiated_by,
            worker=this_worker(),
            heartbeat_at=now,
            started_at=now,
            data_age_seconds=max(0.0, (now - backup.started_at).total_seconds())
            if backup.started_at
            else None,
        )


def run_drill(
    target: Target, *, backup: Backup | None = None, trigger: str = "manual", initiated_by: str = ""
) -> Drill:
    """Drill ``backup`` (else one picked by :func:`pick_drill_backup`) of ``target`` and return the
    finished Drill: PASSED only when every check passed (the backup's proof then becomes
    "drilled"), FAILED otherwise, with a human, redacted ``error_message``. A failure alerts
    DRILL_FAILED; a pass after a failed drill alerts DRILL_RECOVERED once. Raises ServiceError
    for a backup of another target, and :class:`DrillRefused` while another drill uses the
    sandbox (nothing recorded then)."""
    if backup is not None and backup.target_id != target.pk:
        raise ServiceError(f"backup {backup.pk} belongs to target {backup.target.name}, not {target.name}")
    if backup is None:
        backup = pick_drill_backup(target)
    if backup is None:
        return _failed_at_once(
            target, None, trigger, initiated_by, f"target {target.name} has no successful backup to drill"
        )
    if backup.status != BackupStatus.SUCCESS or backup.deleted_at is not None:
        state = "deleted" if backup.deleted_at is not None else backup.status
        return _failed_at_once(target, backup, trigger, initiated_by, f"backup {backup.pk} is {state}")
    try:
        plan = _plan(target, backup)
    except ServiceError as exc:
        return _failed_at_once(target, backup, trigger, initiated_by, str(exc))
    drill = _claim(target, backup, plan, trigger, initiated_by)
    rows = Drill.objects.filter(pk=drill.pk, status=DrillStatus.RUNNING)
    errors: list[str] = []
    with Heartbeat(rows, f"drill {drill.pk}"):
        try:
            _drill(drill, backup, plan, errors)
        except Exception as exc:
            errors.append(describe_error(exc))
        finally:
            _drop_scratch(drill, plan, errors)
    return _finish(drill, errors)


def _failed_at_once(
    target: Target, backup: Backup | None, trigger: str, initiated_by: str, message: str
) -> Drill:
    now = timezone.now()
    drill = Drill.objects.create(
        target=target,
        backup=backup,
        sandbox=target.sandbox,
        status=DrillStatus.RUNNING,
        trigger=trigger,
        initiated_by=initiated_by,
        worker=this_worker(),
        started_at=now,
    )
    return _finish(drill, [message])


def _drill(drill: Drill, backup: Backup, plan: _Plan, errors: list[str]) -> None:
    """Check every copy, restore, run the checks; appends to ``drill.checks`` and ``errors``."""
    copies = stored_copies(backup)
    if not copies:
        raise ServiceError(f"backup {backup.pk} has no stored copy")
    chain = chain_of(backup)
    for link in chain:
        for copy in stored_copies(link) if link.pk != backup.pk else copies:
            try:
                check_copy_digest(link, copy, authenticate=True)
            except Exception as exc:
                drill.checks.append(
                    _check(f"copy {link.pk} on {copy.storage.name}", link.checksum, _short(exc), False)
                )
                raise ServiceError(
                    f"backup {link.pk}'s copy on {copy.storage.name} is damaged; nothing was restored: "
                    f"{describe_error(exc)}"
                ) from None
            drill.checks.append(
                _check(f"copy {link.pk} on {copy.storage.name}", link.checksum, "sha256 matches", True)
            )
    manifest = _manifest(backup)
    expected_counts: dict[str, int] = dict(backup.engine_info.get("row_counts") or {})
    exact = bool(backup.engine_info.get("row_counts_exact"))
    # The engine would compare recorded counts itself and stop at the first difference; the drill
    # compares them per table below, so it records every one.
    manifest["engine_info"] = {
        key: value
        for key, value in manifest["engine_info"].items()
        if key not in ("row_counts", "row_counts_exact")
    }
    options = RestoreOptions(scratch_dir=scratch_dir(), manifest=manifest)
    connection = _scratch_connection(drill, plan)
    started = time.monotonic()
    try:
        if plan.trial:
            summary = feed_copy(backup, copies[0], lambda stream: plan.engine.trial_restore(stream, options))
            result = RestoreResult(message=summary)
        else:
            assert connection is not None
            if plan.directory is not None:
                Path(drill.scratch_name).mkdir(mode=0o700, parents=True)
            result = _restore(plan.engine, connection, chain, manifest, options)
    finally:
        drill.restore_seconds = time.monotonic() - started
    drill.checks.append(_check("restore", "restored", result.message or "restored", True))
    if connection is None:
        connection = Connection(name=drill.target.name, engine=plan.engine.key)
    elif isinstance(plan.engine, ConfigurationEngine):
        recorded = backup.engine_info.get("files")
        drill.checks.append(
            _check("configuration files", recorded, len(result.files), recorded in (None, len(result.files)))
        )
    elif plan.engine.key == "files":
        index = manifest["engine_info"].get("index")
        drill.checks.append(
            _check(
                "file index",
                f"{len(index)} entries" if isinstance(index, dict) else "no index in the manifest",
                f"{len(result.files)} file(s) restored, paths, sizes, SHA-256 and modes match"
                if isinstance(index, dict)
                else f"{len(result.files)} file(s) restored",
                True,
            )
        )
    else:
        _compare_tables(drill, plan.engine, connection, manifest, expected_counts, exact)
    _run_assertions(drill, plan.engine, connection)


def _run_assertions(drill: Drill, engine: Engine, connection: Connection) -> None:
    """The target's ``drill_checks``, each must return true; an engine without SQL fails each
    (a configured check is never skipped silently)."""
    timeout = check_timeout_seconds()
    for assertion in drill.target.drill_checks or []:
        try:
            value = engine.check_assertion(connection, str(assertion), timeout)
            ok = value.strip().lower() in TRUE_VALUES
        except EngineError as exc:
            value, ok = secrets.redact(str(exc)), False
        drill.checks.append(_check(f"sql: {assertion}", "true", value, ok))


def _manifest(backup: Backup) -> dict[str, Any]:
    """The manifest facts a restore and the checks need: the catalog's, plus the stored
    manifest's file index (kept in the manifest only) for file trees."""
    manifest = restore_manifest(backup)
    if backup.backup_type != "configuration" and get_engine(backup.target.engine).key == "files":
        stored = load_manifest(backup)
        index = (stored.get("engine_info") or {}).get("index")
        if index is not None:
            manifest["engine_info"]["index"] = index
    return manifest


def _scratch_connection(drill: Drill, plan: _Plan) -> Connection | None:
    if plan.sandbox is not None:
        return dataclasses.replace(connection_for(plan.sandbox), database=drill.scratch_name)
    if plan.directory is not None:
        directory = Path(drill.scratch_name)
        return Connection(
            name=f"drill-{drill.pk}",
            engine=plan.engine.key,
            database=str(directory / "restored.sqlite3"),
            paths=(str(directory / "tree"),),
        )
    return None


def _restore(
    engine: Engine,
    connection: Connection,
    chain: list[Backup],
    manifest: dict[str, Any],
    options: RestoreOptions,
) -> RestoreResult:
    backup = chain[-1]
    copies = stored_copies(backup)
    if isinstance(engine, ConfigurationEngine):
        directory = Path(connection.paths[0])
        return _feed(backup, copies[0], lambda stream: engine.restore_to_directory(directory, stream))
    if len(chain) == 1:
        return _feed(backup, copies[0], lambda stream: engine.restore(connection, stream, options))
    links = [
        ChainLink(manifest=manifest if link.pk == backup.pk else restore_manifest(link), feed=_feeder(link))
        for link in chain
    ]
    return engine.restore_chain(connection, links, options)


def _feed(backup: Backup, copy: BackupCopy, restore: Callable[[BinaryIO], RestoreResult]) -> RestoreResult:
    results: list[RestoreResult] = []

    def consume(stream: BinaryIO) -> str:
        results.append(restore(stream))
        return results[-1].message

    feed_copy(backup, copy, consume)
    return results[-1]


def _feeder(link: Backup) -> Callable[[Callable[[BinaryIO], str]], str]:
    def feed(consume: Callable[[BinaryIO], str]) -> str:
        return feed_copy(link, stored_copies(link)[0], consume)

    return feed


def _compare_tables(
    drill: Drill,
    engine: Engine,
    connection: Connection,
    manifest: dict[str, Any],
    expected: dict[str, int],
    exact: bool,
) -> None:
    """Row counts per table against the manifest (approximate counts recorded, never failing);
    without recorded counts, the restored tables against the manifest's table list."""
    counts = engine.row_counts(connection)
    if not expected:
        tables = sorted(str(name) for name in manifest["engine_info"].get("tables") or [])
        if tables:
            missing = [name for name in tables if name not in counts]
            drill.checks.append(
                _check(
                    "tables",
                    f"{len(tables)} table(s)",
                    f"missing: {', '.join(missing[:10])}" if missing else f"{len(tables)} table(s) present",
                    not missing,
                )
            )
        drill.checks.append(
            _check(
                "row counts", "none recorded by the backup", f"{sum(counts.values())} row(s) restored", True
            )
        )
        return
    for table, count in sorted(expected.items()):
        actual = counts.get(table)
        if actual is None:
            drill.checks.append(_check(f"rows {table}", count, "table missing", False))
        elif exact:
            drill.checks.append(_check(f"rows {table}", count, actual, actual == count))
        else:
            drill.checks.append(_check(f"rows {table} (approximate)", count, actual, True))


def _drop_scratch(drill: Drill, plan: _Plan, errors: list[str]) -> None:
    """Drop the scratch copy (a missing one is fine); a failure is a failed check."""
    try:
        _remove(drill, plan.engine, plan.sandbox)
    except Exception as exc:
        message = f"scratch copy {drill.scratch_name} was not dropped: {describe_error(exc)}"
        logger.error("drill %s: %s", drill.pk, message)
        drill.checks.append(_check("scratch copy dropped", "dropped", _short(exc), False))
        errors.append(message)


def _remove(drill: Drill, engine: Engine, sandbox: Target | None) -> None:
    if not drill.scratch_name:
        return
    if sandbox is not None:
        engine.drop_database(dataclasses.replace(connection_for(sandbox), database=drill.scratch_name))
    elif os.path.isabs(drill.scratch_name) and os.path.lexists(drill.scratch_name):
        shutil.rmtree(drill.scratch_name)


def _short(exc: BaseException) -> str:
    return secrets.redact(describe_error(exc))


def _finish(drill: Drill, errors: list[str]) -> Drill:
    failed = [check for check in drill.checks if not check["ok"]]
    if not errors and failed:
        errors.append(
            f"{len(failed)} check(s) failed: "
            + "; ".join(f"{c['name']}: expected {c['expected']}, got {c['actual']}" for c in failed[:5])
        )
    if not errors and not drill.checks:
        errors.append("no check ran")  # a drill proves nothing without one
    now = timezone.now()
    drill.status = DrillStatus.FAILED if errors else DrillStatus.PASSED
    drill.error_message = secrets.redact("; ".join(errors))
    drill.finished_at = now
    drill.duration_seconds = (now - drill.started_at).total_seconds()
    drill.save(
        update_fields=[
            "status",
            "error_message",
            "finished_at",
            "duration_seconds",
            "restore_seconds",
            "data_age_seconds",
            "checks",
        ]
    )
    passed = drill.status == DrillStatus.PASSED
    if passed and drill.backup_id is not None:
        record_proof(drill.backup_id, Proof.DRILLED, now)
    record_audit(
        "backup.drill",
        obj=drill.backup if drill.backup is not None else drill.target,
        outcome=Outcome.SUCCESS if passed else Outcome.FAILURE,
        username=drill.initiated_by or None,
        details={
            "drill": drill.pk,
            "target": drill.target.name,
            "backup": drill.backup_id,
            "status": drill.status,
            "restore_seconds": drill.restore_seconds,
            "error": drill.error_message,
        },
    )
    _alert(drill)
    logger.info("drill %s of target %s: %s", drill.pk, drill.target.name, drill.status)
    return drill


def _alert(drill: Drill) -> None:
    """DRILL_FAILED on a failure; DRILL_RECOVERED on a pass right after a failed drill. Never raises."""
    if drill.status == DrillStatus.PASSED:
        previous = (
            Drill.objects.filter(
                target_id=drill.target_id, status__in=[DrillStatus.PASSED, DrillStatus.FAILED]
            )
            .exclude(pk=drill.pk)
            .filter(started_at__lte=drill.started_at)
            .order_by("-started_at", "-id")
            .first()
        )
        if previous is None or previous.status != DrillStatus.FAILED:
            return
        event, subject = Event.DRILL_RECOVERED, f"Restore drills of {drill.target.name} pass again"
    else:
        event, subject = Event.DRILL_FAILED, f"Restore drill of {drill.target.name} failed"
    fields = {
        "target": drill.target.name,
        "drill": str(drill.pk),
        "backup": str(drill.backup_id or "none"),
        "status": drill.status,
    }
    if drill.restore_seconds is not None:
        fields["restore time"] = f"{drill.restore_seconds:.1f} s"
    text = (
        drill.error_message or f"Drill {drill.pk} restored backup {drill.backup_id} and every check passed."
    )
    try:
        notify(
            str(event), subject=subject, text=text, fields=fields, backup=drill.backup, target=drill.target
        )
    except Exception:
        logger.exception("drill %s of target %s: notifications failed", drill.pk, drill.target.name)


def reap_lost_drills() -> int:
    """Mark FAILED ("worker lost while drilling") every RUNNING drill whose heartbeat is older
    than BACKUPSITE_HEARTBEAT_STALE_SECONDS or whose worker on this host is gone, and remove its
    scratch database or directory. Returns how many were reaped."""
    stale = timezone.now() - timedelta(seconds=settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS)
    reaped = 0
    for drill in Drill.objects.filter(status=DrillStatus.RUNNING).select_related(
        "target", "sandbox", "backup"
    ):
        beat = drill.heartbeat_at or drill.started_at
        if beat >= stale and not (drill.worker and process_gone(drill.worker)):
            continue
        message = "worker lost while drilling"
        try:
            engine = get_engine(drill.sandbox.engine if drill.sandbox is not None else drill.target.engine)
            _remove(drill, engine, drill.sandbox)
        except Exception as exc:
            message += f"; scratch copy {drill.scratch_name} was not dropped: {_short(exc)}"
        now = timezone.now()
        updated = Drill.objects.filter(pk=drill.pk, status=DrillStatus.RUNNING).update(
            status=DrillStatus.FAILED,
            error_message=message,
            finished_at=now,
            duration_seconds=(now - drill.started_at).total_seconds(),
        )
        if updated:
            reaped += 1
            drill.refresh_from_db()
            _alert(drill)
    return reaped


def drill_dict(drill: Drill) -> dict[str, Any]:
    """The drill as plain JSON values (for ``backup_drill --json``, the API and evidence)."""
    return {
        "id": drill.pk,
        "target": drill.target.name,
        "backup": drill.backup_id,
        "sandbox": drill.sandbox.name if drill.sandbox is not None else None,
        "scratch_name": drill.scratch_name,
        "status": drill.status,
        "trigger": drill.trigger,
        "initiated_by": drill.initiated_by,
        "started_at": drill.started_at.isoformat(),
        "finished_at": drill.finished_at.isoformat() if drill.finished_at else None,
        "duration_seconds": drill.duration_seconds,
        "restore_seconds": drill.restore_seconds,
        "data_age_seconds": drill.data_age_seconds,
        "checks": list(drill.checks),
        "error_message": drill.error_message,
    }


__all__ = ["DrillRefused", "drill_dict", "pick_drill_backup", "reap_lost_drills", "run_drill"]
