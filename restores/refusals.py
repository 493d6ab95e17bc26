"""Why a restore cannot start: every check made before anything is read or written, listed
(for the preview) or raised as :class:`RestoreRefused` naming the first (for a restore)."""

from __future__ import annotations

from pathlib import Path

from backups import services as backup_services
from backups.models import Backup, BackupStatus, Target
from backups.services import (
    Connection,
    EngineError,
    SecretError,
    ServiceError,
    connection_for,
    get_engine,
    stored_copies,
)

from .applying import restore_options


class RestoreRefused(ServiceError):
    """The restore was not started: wrong engine, unusable backup. Nothing was changed."""


def usability_problems(backup: Backup) -> list[str]:
    if backup.deleted_at is not None:
        return [f"backup {backup.pk} was deleted by retention; its files are gone"]
    problems = []
    if backup.status != BackupStatus.SUCCESS:
        problems.append(f"backup {backup.pk} is {backup.status}; only successful backups can be restored")
    if backup.backup_type == "incremental" and backup.base_id is None:
        problems.append(
            f"backup {backup.pk} is an incremental backup whose base is not in the catalog; it holds only "
            "the changes since then. Reindex the storage holding the earlier backups of its chain "
            "(backup_reindex), then restore again."
        )
        return problems
    try:
        chain = backup_services.chain_of(backup)
    except ServiceError as exc:
        return [*problems, str(exc)]
    for link in chain:
        if not stored_copies(link):
            problems.append(
                f"backup {link.pk} has no stored copy"
                + (f" (backup {backup.pk} is built on it)" if link.pk != backup.pk else "")
            )
    return problems


def restore_problems(backup: Backup, destination: Target, connection: Connection | None = None) -> list[str]:
    """Every reason ``backup`` cannot be restored into ``destination`` (into ``connection``, a
    database of it other than its own, when given); empty when it can. Reads only: the
    destination is asked whether it can receive a restore and the engine whether this restore
    would be refused (e.g. a ``restore_jobs`` spool too big for the scratch disk), before a byte
    of the backup is read; nothing is written."""
    if backup.backup_type == "configuration":
        return [f"backup {backup.pk} is a configuration backup: restore it into a directory (--to-dir DIR)"]
    # An external target's files are written, and restored, by another tool (backups.watching).
    watched = backup_services.run_refusal(backup.target) or backup_services.run_refusal(destination)
    if watched:
        return [watched]
    problems = usability_problems(backup)
    if destination.engine != backup.target.engine:
        problems.append(
            f"backup {backup.pk} is a {backup.target.engine} backup; target {destination.name} uses the "
            f"{destination.engine} engine. Restore into a target of the same engine."
        )
        return problems
    engine = get_engine(destination.engine)
    try:
        connection = connection or connection_for(destination)
        engine.check_restore_destination(connection)
        options = restore_options(backup)
        refusal = engine.restore_refusal(connection, options.manifest, options.scratch_dir)
    except (EngineError, SecretError) as exc:
        problems.append(f"target {destination.name}: {exc}")
    else:
        if refusal:
            problems.append(f"target {destination.name}: {refusal}")
    return problems


def check_restorable(backup: Backup, destination: Target, connection: Connection | None = None) -> None:
    """Raise :class:`RestoreRefused` (naming the first problem) unless ``backup`` can be restored
    into ``destination`` (or ``connection``: see :func:`restore_problems`)."""
    problems = restore_problems(backup, destination, connection)
    if problems:
        raise RestoreRefused(problems[0])


def confirmation_word(destination: Target) -> tuple[str, str]:
    """What the operator must type to restore into ``destination``, and what it is: the
    destination database's name for database servers, the target's name otherwise."""
    if get_engine(destination.engine).confirm_with == "database" and destination.database:
        return destination.database, "destination database's name"
    return destination.name, "destination's name"


def check_directory_restorable(backup: Backup, directory: Path) -> None:
    """Raise :class:`RestoreRefused` unless ``backup`` is a configuration backup that can be
    restored under ``directory``."""
    if backup.backup_type != "configuration":
        raise RestoreRefused(
            f"backup {backup.pk} is a {backup.backup_type} backup; only configuration backups are "
            "restored into a directory (use --to TARGET)"
        )
    if not directory.is_absolute():
        raise RestoreRefused(f"--to-dir: {directory} must be an absolute path")
    if directory.exists() and not directory.is_dir():
        raise RestoreRefused(f"--to-dir: {directory} exists and is not a directory")
    problems = usability_problems(backup)
    if problems:
        raise RestoreRefused(problems[0])
