"""Reading stored copies back: digests, decompression, trial restores and sandbox restores."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from django.conf import settings
from django.utils import timezone

from backups.runs.chains import MANIFEST_LIMIT
from backups.runs.steps import describe_error, record_step
from backups.streaming.codecs import DecompressingReader
from backups.streaming.encryption import EncryptionError, KeyMismatch, decrypted
from backups.streaming.pipeline import HashingReader

from . import keys, secrets
from .engines import Engine, EngineError
from .engines.base import RestoreOptions
from .models import Backup, BackupCopy, BackupStatus, Proof, Target
from .notifications import VERIFICATION_FAILED, notify_backup
from .proof import record_proof
from .resources import (
    ServiceError,
    connection_for,
    engine_for,
    restore_manifest,
    scratch_dir,
    storage_for,
    stored_copies,
)
from .storages import StorageError
from .watching.settings import EXTERNAL

logger = logging.getLogger(__name__)


def check_copy_digest(
    backup: Backup,
    copy: BackupCopy,
    progress: Callable[[int], None] | None = None,
    *,
    authenticate: bool = False,
) -> None:
    """Re-read one stored copy and compare its size and SHA-256 with the catalog. With
    ``authenticate``, an encrypted copy is also decrypted to its end in the same read (every age
    chunk authenticated, the plaintext discarded): a restore then feeds an engine nothing that
    fails half way, even when whoever damaged the file also rewrote the catalog."""
    identities = keys.identities_for(backup) if authenticate else []
    failure: EncryptionError | None = None
    with storage_for(copy.storage) as storage, contextlib.closing(storage.open_reader(copy.path)) as handle:
        reader = HashingReader(handle, progress, settings.BACKUPSITE_PROGRESS_INTERVAL)
        if identities:
            try:
                with decrypted(reader, identities) as plain:  # type: ignore[arg-type]
                    while plain.read(settings.BACKUPSITE_CHUNK_SIZE):
                        pass
            except EncryptionError as exc:
                failure = exc
        reader.drain(settings.BACKUPSITE_CHUNK_SIZE)
    _compare(backup, copy, reader)  # changed bytes first: the root cause
    if failure is not None:
        raise failure


def _compare(backup: Backup, copy: BackupCopy, reader: HashingReader) -> None:
    if reader.size != backup.file_size:
        raise StorageError(
            f"{copy.storage.name}: {copy.path} is {reader.size} bytes, the catalog says {backup.file_size}"
        )
    if reader.hexdigest() != backup.checksum:
        raise StorageError(
            f"{copy.storage.name}: checksum mismatch for {copy.path}: sha256 {reader.hexdigest()} "
            f"but the catalog says {backup.checksum}"
        )


def check_manifest(backup: Backup, copy: BackupCopy) -> None:
    """The manifest beside a stored copy must describe the catalog's backup: one whose checksum,
    size or file was changed would let ``backup_reindex`` rebuild a row that does not match the
    bytes. A copy without a manifest passes: its bytes are checked, and reconcile reports the gap.
    The caller names the storage in the message."""
    with storage_for(copy.storage) as storage:
        if not storage.exists(copy.manifest_path):
            return
        data = storage.read_bytes(copy.manifest_path, limit=MANIFEST_LIMIT)
    try:
        manifest = json.loads(data)
        record = manifest["backup"]
        described = {
            "checksum": record["checksum"],
            "file_size": record["file_size"],
            "file_path": record["file_path"],
        }
    except (ValueError, RecursionError, TypeError, KeyError):
        raise StorageError(
            f"the manifest {copy.manifest_path} is not a readable Backupsite manifest"
        ) from None
    catalog = {"checksum": backup.checksum, "file_size": backup.file_size, "file_path": copy.path}
    wrong = [
        f"{name} {described[name]!r} (the catalog says {value!r})"
        for name, value in catalog.items()
        if described[name] != value
    ]
    if wrong:
        raise StorageError(
            f"the manifest {copy.manifest_path} does not describe this backup: it gives " + "; ".join(wrong)
        )


def feed_copy(
    backup: Backup,
    copy: BackupCopy,
    consume: Callable[[BinaryIO], str],
    progress: Callable[[int], None] | None = None,
) -> str:
    """Stream a stored copy, decrypted (age) and decompressed, into ``consume``; then check the
    whole stream (authentication, compression framing, size and SHA-256) even if ``consume``
    stopped reading early. An encrypted copy is checked against this host's identities before
    ``consume`` sees a byte: no identity, or a wrong one, raises KeyUnavailable or
    EncryptionError with ``consume`` never called."""
    identities = keys.identities_for(backup)
    with storage_for(copy.storage) as storage, contextlib.closing(storage.open_reader(copy.path)) as handle:
        hashing = HashingReader(handle, progress, settings.BACKUPSITE_PROGRESS_INTERVAL)
        try:
            summary = _consume_plaintext(backup, hashing, identities, consume)
        except Exception as exc:
            # Changed bytes are the root cause to report, not the decoder's complaint about them;
            # what the engine said about the stop (what it left behind) is kept after it.
            hashing.drain(settings.BACKUPSITE_CHUNK_SIZE)
            try:
                _compare(backup, copy, hashing)
            except StorageError as changed:
                raise StorageError(f"{changed}; {describe_error(exc)}") from exc
            raise
        hashing.drain(settings.BACKUPSITE_CHUNK_SIZE)
    _compare(backup, copy, hashing)
    return summary


def _consume_plaintext(
    backup: Backup, hashing: HashingReader, identities: list[str], consume: Callable[[BinaryIO], str]
) -> str:
    """Decrypt (when there are identities) and decompress ``hashing`` into ``consume``, reading
    the stream to its end; the decrypting thread has ended when this returns or raises."""
    with contextlib.ExitStack() as stack:
        source: Any = hashing
        if identities:
            source = stack.enter_context(decrypted(hashing, identities))  # type: ignore[arg-type]
        plain = DecompressingReader(source, backup.compression, settings.BACKUPSITE_CHUNK_SIZE)
        stack.callback(plain.close)
        summary = consume(plain)  # type: ignore[arg-type]
        plain.drain()
        return summary


def check_decryption(backup: Backup, copy: BackupCopy) -> None:
    """For an encrypted backup: this host's identities open ``copy``'s header and its first
    chunk authenticates (reads one chunk, not the file). Raises KeyUnavailable or
    EncryptionError naming the key, before anything is restored."""
    identities = keys.identities_for(backup)
    if not identities:
        return
    with storage_for(copy.storage) as storage, contextlib.closing(storage.open_reader(copy.path)) as handle:
        try:
            with decrypted(handle, identities):
                pass
        except KeyMismatch as exc:  # damage is reported as it is: the copy's, not the key's
            raise KeyMismatch(
                f"backup {backup.pk} ({copy.storage.name}) cannot be decrypted with the identity this "
                f"host has for {keys.describe_keys(backup)}: {exc}"
            ) from None


# -- verification ---------------------------------------------------------------------------------


@dataclass
class VerifyOutcome:
    backup: Backup
    ok: bool
    messages: list[str] = field(default_factory=list)
    proof: Proof | None = None  # what a passed verify proved; None when it failed


def verify_backup(
    backup: Backup,
    *,
    deep: bool = False,
    sandbox: Target | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyOutcome:
    """Re-read every stored copy: size, SHA-256 and the compression stream; with ``deep``, also
    a restore: into a scratch database on the sandbox target (``sandbox``, else the target's
    configured one) when there is one, otherwise the engine's trial restore. Sets
    verified/verified_at and raises the backup's proof (verified; trial; drilled when a sandbox
    restore's row counts matched the manifest), or marks the backup CORRUPT (its proof kept)."""
    if backup.deleted_at is not None:
        raise ServiceError(f"backup {backup.pk} was deleted by retention on {backup.deleted_at:%Y-%m-%d}")
    if backup.status not in (BackupStatus.SUCCESS, BackupStatus.CORRUPT):
        raise ServiceError(f"backup {backup.pk} is {backup.status}; only successful backups can be verified")
    copies = stored_copies(backup)
    if not copies:
        raise ServiceError(f"backup {backup.pk} has no stored copy to verify")
    if deep and backup.target.engine == EXTERNAL:  # adopted: its bytes can be re-read, not restored
        raise ServiceError(
            f"backup {backup.pk} was written by another tool (target {backup.target.name} is external) and "
            "Backupsite cannot restore it, so there is no deep verification; verify it without deep: "
            "its size and SHA-256 are re-read"
        )
    engine = engine_for(backup.target, backup.backup_type)
    if deep and sandbox is None and backup.backup_type != "configuration":
        sandbox = backup.target.sandbox
    if sandbox is not None:
        check_sandbox(engine, backup.target, sandbox)
    undecryptable = ""
    try:
        keys.identities_for(backup)
    except keys.KeyUnavailable as exc:
        if deep:  # a missing key is not a damaged backup: nothing is marked
            raise keys.KeyUnavailable(f"cannot verify --deep: {exc}") from None
        undecryptable = (
            f"encrypted to {keys.describe_keys(backup)}; not decrypted: this host has no identity for it"
        )
    outcome = VerifyOutcome(backup=backup, ok=True)
    counts_matched = True  # every sandbox restore's row counts matched the manifest's
    # The step is marked FAILED by raising inside it; the outcome, not the exception, is returned.
    with (
        contextlib.suppress(ServiceError),
        record_step(backup, "verify", "deep" if deep else "checksum") as step,
    ):
        for copy in copies:
            try:
                consume: Callable[[BinaryIO], str]
                if not deep:
                    consume = _count_only
                elif sandbox is not None:
                    consume = _SandboxRestore(engine, backup, sandbox)
                else:
                    consume = _trial(engine)
                if undecryptable:  # the stored bytes' size and SHA-256 need no key
                    check_copy_digest(backup, copy, progress)
                    summary = f"size and sha256 match; {undecryptable}"
                else:
                    summary = feed_copy(backup, copy, consume, progress)
                    if isinstance(consume, _SandboxRestore):
                        counts_matched = counts_matched and consume.counts_matched
                check_manifest(backup, copy)
                outcome.messages.append(f"{copy.storage.name}: ok ({summary})")
            except Exception as exc:
                outcome.ok = False
                outcome.messages.append(f"{copy.storage.name}: {secrets.redact(describe_error(exc))}")
        step.message = "; ".join(outcome.messages)
        step.bytes = backup.file_size
        if not outcome.ok:
            raise ServiceError(step.message)
    now = timezone.now()
    if outcome.ok:
        backup.verified, backup.verified_at = True, now
        backup.status = BackupStatus.SUCCESS
        backup.error_message = ""
    else:
        backup.verified = False
        backup.status = BackupStatus.CORRUPT
        backup.error_message = "verification failed: " + "; ".join(outcome.messages)
    backup.save(update_fields=["verified", "verified_at", "status", "error_message"])
    if not outcome.ok:
        notify_backup(backup, VERIFICATION_FAILED)
        return outcome
    if not deep:
        outcome.proof = Proof.VERIFIED
    elif sandbox is not None and counts_matched:
        outcome.proof = Proof.DRILLED
    else:  # a trial restore, or a sandbox restore without exact counts to compare
        outcome.proof = Proof.TRIAL
    record_proof(backup.pk, outcome.proof, now)
    return outcome


def _count_only(stream: BinaryIO) -> str:
    total = 0
    while chunk := stream.read(1024 * 1024):
        total += len(chunk)
    return f"{total} bytes decompressed"


def check_sandbox(engine: Engine, target: Target, sandbox: Target) -> None:
    """Raise :class:`ServiceError` unless ``sandbox`` can host scratch restores of ``target``."""
    if not engine.has_scratch_databases:
        raise ServiceError(f"the {engine.key} engine has no scratch databases; verify without a sandbox")
    if sandbox.engine != target.engine:
        raise ServiceError(
            f"sandbox {sandbox.name} uses the {sandbox.engine} engine; target {target.name} needs a "
            f"{target.engine} sandbox"
        )


@dataclass
class _SandboxRestore:
    """A ``feed_copy`` consumer: restore into a scratch database on ``sandbox``, compare row
    counts with the manifest, drop the scratch database whatever happens. ``counts_matched``
    tells afterwards whether the manifest had row counts and every one matched."""

    engine: Engine
    backup: Backup
    sandbox: Target
    counts_matched: bool = False

    def __call__(self, stream: BinaryIO) -> str:
        engine, backup, sandbox = self.engine, self.backup, self.sandbox
        connection = connection_for(sandbox)
        name = f"backupsite_verify_{backup.pk}_{os.urandom(3).hex()}"
        scratch = dataclasses.replace(connection, database=name)
        manifest = restore_manifest(backup)
        try:
            result = engine.restore(
                scratch, stream, RestoreOptions(scratch_dir=scratch_dir(), manifest=manifest)
            )
            counts = result.row_counts or engine.row_counts(scratch)  # the restore may have counted already
        finally:
            try:
                engine.drop_database(scratch)
            except EngineError as exc:
                logger.error(
                    "verify of backup %s: scratch database %s was not dropped: %s", backup.pk, name, exc
                )
        summary, self.counts_matched = _compare_counts(backup.engine_info, counts, result.tables)
        return f"restored into scratch database {name} on {sandbox.name}: {summary}"


def _compare_counts(info: dict[str, Any], counts: dict[str, int], tables: list[str]) -> tuple[str, bool]:
    """The comparison's summary, and whether there were counts to compare and all matched."""
    expected: dict[str, int] = info.get("row_counts") or {}
    if not expected:
        summary = f"{len(tables)} table(s), {sum(counts.values())} row(s); the backup recorded no row counts; dropped"
        return summary, False
    missing = [name for name in expected if name not in counts]
    if missing:
        raise EngineError(f"table(s) missing after the restore: {', '.join(missing[:10])}")
    wrong = [
        f"{name}: {counts[name]} rows, the backup recorded {count}"
        for name, count in expected.items()
        if counts[name] != count
    ]
    if wrong and info.get("row_counts_exact"):
        raise EngineError("row counts differ from the backup: " + "; ".join(wrong[:10]))
    total = sum(expected.values())
    if wrong:
        return (
            f"{len(expected)} table(s) restored; row counts were taken while the source was written, "
            f"so they are approximate ({len(wrong)} differ); dropped"
        ), False
    return f"{len(expected)} table(s), {total} row(s), row counts match the backup; dropped", True


def _trial(engine: Engine) -> Callable[[BinaryIO], str]:
    def consume(stream: BinaryIO) -> str:
        return engine.trial_restore(stream, RestoreOptions(scratch_dir=scratch_dir()))

    return consume
