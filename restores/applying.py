"""Reading a backup back into a destination: the first stored copy whose bytes and manifest
match the catalog is found before anything is touched, then its bytes are fed to the engine (or,
for a chain, every link is checked first and the engine applies them all in one staging)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from backups import services as backup_services
from backups.models import Backup, BackupCopy, Target
from backups.services import (
    ChainLink,
    ConfigurationEngine,
    Connection,
    Engine,
    KeyMismatch,
    RestoreOptions,
    RestoreResult,
    ServiceError,
    check_copy_digest,
    check_decryption,
    check_manifest,
    connection_for,
    describe_error,
    feed_copy,
    get_engine,
    identities_for,
    redact,
    restore_manifest,
    scratch_dir,
    stored_copies,
)

from .progress import RestoreProgress


def intact_copy(backup: Backup, tracker: RestoreProgress) -> BackupCopy:
    """The first stored copy whose bytes match the catalog and, for an encrypted backup, whose
    header opens with this host's identity; the destination is not touched yet."""
    identities_for(backup)  # no key here: refused before a byte is read (KeyUnavailable)
    problems = []
    for candidate in stored_copies(backup):
        try:
            check_manifest(backup, candidate)  # an edited manifest: this copy is not trusted
            check_decryption(backup, candidate)  # the header and first chunk: a wrong key at once
            with tracker.reading(backup.file_size) as report:
                # The digest and, encrypted, every chunk's authentication: nothing damaged
                # reaches the engine, even with a catalog rewritten to match the damage.
                check_copy_digest(backup, candidate, report, authenticate=True)
        except KeyMismatch:
            raise  # the key's fault, not this copy's: every copy would say the same
        except Exception as exc:
            problems.append(f"{candidate.storage.name}: {redact(describe_error(exc))}")
            continue
        return candidate
    raise ServiceError(
        "no intact copy to restore from"
        + (f" (backup {backup.pk})" if backup.base_id or backup.incrementals.exists() else "")
        + "; the destination was not touched: "
        + "; ".join(problems)
    )


def _feed(
    tracker: RestoreProgress, backup: Backup, copy: BackupCopy, consume: Callable[[BinaryIO], str]
) -> str:
    with tracker.reading(backup.file_size) as report:
        return feed_copy(backup, copy, consume, report)


def restore_options(backup: Backup, tracker: RestoreProgress | None = None) -> RestoreOptions:
    """What the engine's ``restore`` gets for ``backup``: the scratch directory, the catalog's
    facts of the backup and the tracker's phase callback. ``restores.refusals`` asks
    :meth:`Engine.restore_refusal` with the same, before anything is read (for a chain too,
    though ``restore_chain`` later gets the last link's stored manifest, a superset)."""
    return RestoreOptions(
        scratch_dir=scratch_dir(),
        manifest=restore_manifest(backup),
        on_phase=tracker.phase if tracker is not None else None,
    )


def restore_into(
    backup: Backup, destination: Target, tracker: RestoreProgress, connection: Connection | None = None
) -> RestoreResult:
    """Restore into ``destination``, or into ``connection`` (a database of it other than its own,
    as a provisioned copy) when given."""
    engine = get_engine(destination.engine)
    connection = connection or connection_for(destination)
    if backup.base_id is not None or "incremental" in engine.supported_types:
        # Engines that make chains restore even one full link from its stored manifest, whose
        # file index lets them check the restored tree before swapping it in.
        return _restore_chain(backup, engine, connection, tracker)
    copy = intact_copy(backup, tracker)
    options = restore_options(backup, tracker)
    outcome: list[RestoreResult] = []

    def consume(stream: BinaryIO) -> str:
        outcome.append(engine.restore(connection, stream, options))
        return outcome[0].message

    _feed(tracker, backup, copy, consume)
    return outcome[0]


def _restore_chain(
    backup: Backup, engine: Engine, connection: Connection, tracker: RestoreProgress
) -> RestoreResult:
    """Apply the chain from its full backup to ``backup``: every link's bytes are checked first,
    then the engine stages them all and swaps the result in only when the last one applied."""
    chain = backup_services.chain_of(backup)
    for number, link in enumerate(chain, 1):  # every link's key before any link is read
        try:
            identities_for(link)
        except ServiceError as exc:
            raise type(exc)(f"link {number} of {len(chain)} in the chain: {exc}") from None
    links: list[ChainLink] = []
    for link in chain:
        copy = intact_copy(link, tracker)
        manifest = backup_services.load_manifest(link)
        links.append(ChainLink(manifest=manifest, feed=functools.partial(_feed, tracker, link, copy)))
    options = RestoreOptions(scratch_dir=scratch_dir(), manifest=links[-1].manifest, on_phase=tracker.phase)
    result = engine.restore_chain(connection, links, options)
    ids = ", ".join(str(link.pk) for link in chain)
    result.message += f" (chain of {len(links)} backups: {ids})"
    return result


def restore_configuration(backup: Backup, directory: Path, tracker: RestoreProgress) -> RestoreResult:
    copy = intact_copy(backup, tracker)
    outcome: list[RestoreResult] = []

    def consume(stream: BinaryIO) -> str:
        outcome.append(ConfigurationEngine().restore_to_directory(directory, stream))
        return outcome[0].message

    _feed(tracker, backup, copy, consume)
    return outcome[0]
