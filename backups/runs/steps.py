"""Recording the steps of a run as BackupStep rows, so the admin can show a timeline."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import transaction
from django.utils import timezone

from backups.logs import log_context
from backups.models import Backup, BackupStep, StepStatus
from backups.secrets import redact


class WorkerLost(Exception):
    """The process running a backup died without recording an outcome."""


@contextmanager
def record_step(
    backup: Backup, name: str, message: str = "", also_save: Callable[[], None] | None = None
) -> Iterator[BackupStep]:
    """Create a RUNNING step; mark it SUCCESS on exit or FAILED with the error, then re-raise.
    ``also_save``: the writes that go with the step's success (a copy's stored size), made in
    the same transaction."""
    step = BackupStep.objects.create(backup=backup, name=name, started_at=timezone.now(), message=message)
    # In a run, the step that failed stays on the lines that report the failure.
    with log_context(step=name, keep_on_error=True):
        try:
            yield step
            step.status = StepStatus.SUCCESS
            step.completed_at = timezone.now()
            with transaction.atomic() if also_save is not None else contextlib.nullcontext():
                if also_save is not None:
                    also_save()
                step.save(update_fields=["status", "message", "completed_at", "bytes"])
        except BaseException as exc:
            step.status = StepStatus.FAILED
            step.message = redact(describe_error(exc))
            step.completed_at = timezone.now()
            step.save(update_fields=["status", "message", "completed_at"])
            raise


def record_done(backup: Backup, name: str, message: str, size: int | None = None) -> BackupStep:
    """Record a step that already happened inside another (compression, done in the dump's
    stream) as SUCCESS in one write."""
    now = timezone.now()
    return BackupStep.objects.create(
        backup=backup, name=name, status=StepStatus.SUCCESS, started_at=now, completed_at=now,
        bytes=size, message=message,
    )  # fmt: skip


def describe_error(exc: BaseException) -> str:
    """A one-line human message for an exception; known families carry their own wording."""
    from backups.engines import EngineError
    from backups.resources import ServiceError
    from backups.secrets import SecretError
    from backups.storages import StorageError
    from backups.streaming.codecs import CodecError
    from backups.streaming.encryption import EncryptionError
    from backups.streaming.pipeline import PipelineError

    known = (
        EngineError, StorageError, PipelineError, CodecError, EncryptionError, SecretError, ServiceError,
        WorkerLost,
    )  # fmt: skip
    if isinstance(exc, known):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by the user (Ctrl-C)"
    if isinstance(exc, SystemExit):
        if isinstance(exc.code, str) and exc.code:
            return f"stopped: {exc.code}"
        return "stopped: the process was told to shut down (its worker was stopped or restarted)"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"unexpected error: {type(exc).__name__}: {exc}"
