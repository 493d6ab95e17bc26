"""The catalog and the storages, compared: rebuild rows from manifests, report disagreements.

``reindex_storage`` recovers a lost application database from the backups themselves: every
``<file>.manifest.json`` next to a backup file describes its Backup row. A manifest is data from
a storage, not configuration anyone checked: every field is validated as the TOML file and the
admin validate theirs (a target name by the Target name field's rules, a registered engine,
ids and sizes within the database's range, dates with an offset, a SHA-256 checksum that the
file's bytes must have), and a manifest that fails is skipped with its reason while the others
are indexed. ``reconcile`` reports catalog copies whose files are gone or differ in size, and
files no catalog entry knows. Neither ever deletes a file.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from backups.runs import chains

from .engines import engine_keys
from .models import RECORD_COLUMNS, Backup, BackupCopy, BackupStatus, CopyStatus, Proof, Storage, Target
from .resources import MANIFEST_FORMAT, MANIFEST_SUFFIX, storage_for
from .storages import BackupStorage, StorageError, StoredObject
from .streaming.encryption import EncryptionError, key_fingerprint, parse_recipient

logger = logging.getLogger(__name__)
DATETIME_COLUMNS = {"started_at", "completed_at", "verified_at", "expires_at", "created_at", "deleted_at"}
#: Record columns a reindexed row takes from its manifest (the status is always SUCCESS: a
#: manifest is written only once every copy is stored and confirmed).
IMPORTED_COLUMNS = tuple(
    c for c in RECORD_COLUMNS if c not in {"created_at", "deleted_at", "progress", "status"}
)
BIGINT_MAX = 2**63 - 1  # BigIntegerField and the primary key, on every supported database
INTEGER_MAX = 2**31 - 1  # PositiveIntegerField
SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestRefused(ValueError):
    """A manifest that is not indexed; the message says why, for the person reading the report."""


@dataclass
class ReindexReport:
    storage: str
    dry_run: bool
    created: list[str] = field(default_factory=list)  # "backup N (path)" or "copy ... of backup N"
    known: int = 0
    targets_created: list[str] = field(default_factory=list)
    #: One line per manifest not indexed: "<manifest path>: <why>".
    skipped: list[str] = field(default_factory=list)
    #: Indexed, but not whole: an incremental whose base no storage indexed so far holds.
    problems: list[str] = field(default_factory=list)
    #: Incrementals indexed before their base: (backup id, the base's file path), linked at the end.
    unlinked: list[tuple[int, str]] = field(default_factory=list)
    #: Targets a dry run would create (lower-case name -> (name, engine)), so later manifests
    #: are checked against them as they would be against the created row.
    planned_targets: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every manifest indexed (or already known) and every chain linked."""
        return not (self.skipped or self.problems)


def _listing(storage: BackupStorage) -> dict[str, StoredObject]:
    return {item.path: item for item in storage.list_objects()}


def reindex_storage(storage_row: Storage, *, dry_run: bool = False) -> ReindexReport:
    """Create the Backup and BackupCopy rows missing for the manifests found in ``storage_row``.
    A manifest that cannot be trusted is skipped (``report.skipped``, with the reason) and the
    rest are still indexed; only a storage that cannot be listed raises (StorageError)."""
    report = ReindexReport(storage=storage_row.name, dry_run=dry_run)
    with storage_for(storage_row) as storage:  # one connection for the listing and the manifests
        listing = _listing(storage)
        for path in sorted(listing):
            if not path.endswith(MANIFEST_SUFFIX):
                continue
            try:
                _reindex_manifest(report, storage, storage_row, listing, path)
            except ManifestRefused as exc:
                report.skipped.append(f"{path}: {exc}")
            except (DatabaseError, ValidationError, ValueError, TypeError, KeyError, OverflowError) as exc:
                # Validation should leave nothing for the database to refuse; if it does, this
                # manifest alone is skipped (its savepoint rolled back), never the whole run.
                report.skipped.append(f"{path}: the catalog refused it ({type(exc).__name__}: {exc})")
                logger.warning("reindex of %s: %s refused by the database: %s", storage_row.name, path, exc)
    _link_bases(report)
    if not dry_run:
        _advance_id_sequence()
    return report


def _advance_id_sequence() -> None:
    """Rows inserted with their manifests' ids leave PostgreSQL's id sequence behind them, and the
    next backup would collide with one of them (duplicate key). Move it past the highest id,
    never back (a run may have taken an id meanwhile). SQLite and MySQL/MariaDB continue after
    the highest id by themselves."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:  # Backup's table is backup_history
        cursor.execute(
            "SELECT setval(sequence, GREATEST((SELECT COALESCE(MAX(id), 1) FROM backup_history), "
            "COALESCE(pg_sequence_last_value(sequence::regclass), 1))) "
            "FROM (SELECT pg_get_serial_sequence('backup_history', 'id') AS sequence) AS found"
        )


def _reindex_manifest(
    report: ReindexReport,
    storage: BackupStorage,
    storage_row: Storage,
    listing: dict[str, StoredObject],
    path: str,
) -> None:
    file_path = path.removesuffix(MANIFEST_SUFFIX)
    try:
        manifest = json.loads(storage.read_bytes(path, limit=chains.MANIFEST_LIMIT))
    except (StorageError, ValueError, RecursionError) as exc:
        raise ManifestRefused(f"not a readable Backupsite manifest ({exc})") from None
    record, target_name, engine = validate_manifest(manifest, file_path)
    stored = listing.get(file_path)
    if stored is None:
        raise ManifestRefused(f"its backup file {file_path} is missing")
    if record.get("file_size") is not None and stored.size != record["file_size"]:
        raise ManifestRefused(
            f"{file_path}: {stored.size} bytes in storage, the manifest says {record['file_size']}"
        )
    target = _matching_target(report, target_name, engine)
    if not _already_indexed(target, record, storage_row):
        _check_bytes(storage, file_path, record["checksum"])
    with transaction.atomic():
        _index_one(report, storage_row, record, target_name, engine, target, manifest, stored)


def _already_indexed(target: Target | None, record: dict[str, Any], storage_row: Storage) -> bool:
    return target is not None and (
        BackupCopy.objects.filter(
            backup__target=target,
            backup__file_path=record["file_path"],
            backup__checksum=record["checksum"],
            storage=storage_row,
        ).exists()
    )


def _check_bytes(storage: BackupStorage, file_path: str, checksum: str) -> None:
    """A manifest vouches for its file only if the file's SHA-256 is the one it records: a file
    swapped for another backup's (sizes may match) or a manifest whose checksum was edited is not
    indexed. This reads every backup not yet indexed once."""
    try:
        _size, sha256 = storage.digest(file_path)
    except StorageError as exc:
        raise ManifestRefused(f"its backup file {file_path} cannot be read ({exc})") from None
    if sha256 != checksum:
        raise ManifestRefused(
            f"{file_path}: its SHA-256 is {sha256}, the manifest says {checksum} "
            "(the file or the manifest was changed)"
        )


def validate_manifest(manifest: Any, file_path: str) -> tuple[dict[str, Any], str, str]:
    """(the backup record, the target name, the engine) of a manifest found beside ``file_path``;
    raises :class:`ManifestRefused` naming the first field that cannot be trusted."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ManifestRefused(f"not a readable Backupsite manifest (unknown manifest format {found!r})")
    record, target = manifest.get("backup"), manifest.get("target")
    if not isinstance(record, dict) or not isinstance(target, dict):
        raise ManifestRefused("not a readable Backupsite manifest (no backup record or target)")
    name, engine = target.get("name"), target.get("engine")
    name_problem = target_name_problem(name)
    if name_problem:
        raise ManifestRefused(f"target.name: {name_problem}")
    if not isinstance(engine, str) or engine not in engine_keys():
        raise ManifestRefused(
            f"target.engine: {engine!r} is not an engine registered here (available: {', '.join(engine_keys())})"
        )
    if record.get("file_path") != file_path:
        raise ManifestRefused(f"it describes {record.get('file_path')!r}, not {file_path!r}")
    checksum = record.get("checksum")
    if not isinstance(checksum, str) or not SHA256.fullmatch(checksum):
        raise ManifestRefused("backup.checksum: not a SHA-256 (64 lower-case hex digits)")
    pk = record.get("id")
    if pk is not None and (isinstance(pk, bool) or not isinstance(pk, int) or not 1 <= pk <= BIGINT_MAX):
        raise ManifestRefused(f"backup.id: must be a whole number from 1 to {BIGINT_MAX}")
    for column in IMPORTED_COLUMNS:
        problem = column_problem(column, record.get(column))
        if problem:
            raise ManifestRefused(f"backup.{column}: {problem}")
    problem = encryption_problem(record)
    if problem:
        raise ManifestRefused(problem)
    base = record.get("base_file_path")
    if base is not None and (not isinstance(base, str) or len(base) > 1024 or "\x00" in base):
        raise ManifestRefused("backup.base_file_path: must be the path of a backup file")
    if not isinstance(manifest.get("engine_info") or {}, dict):
        raise ManifestRefused("engine_info: must be a JSON object")
    return record, str(name), engine  # str(): already checked, told to the type checker


def encryption_problem(record: dict[str, Any]) -> str:
    """Why the record's encryption fields cannot be trusted, or "": an encrypted backup names
    its recipients (age public keys) and its key id, the fingerprint of one of them."""
    recipients = record.get("encryption_recipients") or []
    if record.get("encryption", "none") in (None, "none"):
        return "backup.encryption_recipients: an unencrypted backup lists none" if recipients else ""
    if not recipients:
        return (
            "backup.encryption_recipients: an encrypted backup must list the public keys it was encrypted to"
        )
    for index, recipient in enumerate(recipients):
        try:
            parse_recipient(recipient if isinstance(recipient, str) else "")
        except EncryptionError as exc:
            return f"backup.encryption_recipients[{index}]: {exc}"
    if record.get("encryption_key_id") not in {key_fingerprint(r) for r in recipients}:
        return (
            "backup.encryption_key_id: must be the fingerprint of one of its recipients (the key "
            "backup_keys status lists as id)"
        )
    return ""


def target_name_problem(name: Any) -> str:
    """Why ``name`` cannot name a target (the Target name field's own rules), or ""."""
    if not isinstance(name, str) or not name:
        return "missing"
    try:
        Target._meta.get_field("name").clean(name, None)
    except ValidationError as exc:
        return f"{name!r} is not a valid target name: {' '.join(exc.messages)}"
    return ""


def column_problem(column: str, value: Any) -> str:
    """Why ``value`` cannot fill the Backup column ``column`` (by the model field's type, range,
    length and choices), or "". None is accepted: the column keeps its default."""
    if value is None:
        return ""
    spec = Backup._meta.get_field(column)
    if isinstance(spec, models.DateTimeField):
        try:
            moment = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None or timezone.is_naive(moment):
            return f"{value!r} is not a date and time with a UTC offset"
    elif isinstance(spec, models.BooleanField):
        if not isinstance(value, bool):
            return "must be true or false"
    elif isinstance(spec, models.IntegerField):
        high = BIGINT_MAX if isinstance(spec, models.BigIntegerField) else INTEGER_MAX
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            return f"must be a whole number from 0 to {high}"
    elif isinstance(spec, models.FloatField):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            return "must be a number of seconds"
    elif isinstance(spec, models.JSONField):
        if not isinstance(value, list):
            return "must be a list"
    elif isinstance(spec, models.CharField | models.TextField):
        if not isinstance(value, str) or "\x00" in value:
            return "must be text"
        if spec.max_length and len(value) > spec.max_length:
            return f"longer than {spec.max_length} characters"
        allowed = [str(choice) for choice, _label in spec.flatchoices]
        if allowed and value not in allowed:
            return f"{value!r} is not one of {', '.join(allowed)}"
    return ""


def _matching_target(report: ReindexReport, name: str, engine: str) -> Target | None:
    """The existing target the manifest names (None: one to create), if the names match exactly
    and the engines match. In a dry run, a target an earlier manifest would create counts."""
    target = Target.objects.filter(name__iexact=name).first()
    if target is not None:
        known_name, known_engine = target.name, target.engine
    else:
        known_name, known_engine = report.planned_targets.get(name.lower(), (name, engine))
    if known_name != name:
        raise ManifestRefused(
            f"it names target {name!r}, but the target here is {known_name!r} (names differ only in "
            "case); rename the target to match the manifests and run again"
        )
    if known_engine != engine:
        raise ManifestRefused(
            f"target {name!r} uses the {known_engine} engine; the manifest says {engine}: not attached to it"
        )
    return target


def _link_bases(report: ReindexReport) -> None:
    for pk, base_path in report.unlinked:
        backup = Backup.objects.get(pk=pk)
        base = Backup.objects.filter(target_id=backup.target_id, file_path=base_path).first()
        if base is None:
            report.problems.append(
                f"{backup.file_path}: an incremental built on {base_path}, which no storage indexed "
                "so far holds; it cannot be restored until that backup is indexed"
            )
            continue
        backup.base = base
        backup.save(update_fields=["base"])


def _index_one(
    report: ReindexReport,
    storage_row: Storage,
    record: dict[str, Any],
    target_name: str,
    engine: str,
    target: Target | None,
    manifest: dict[str, Any],
    stored: StoredObject,
) -> None:
    dry_run = report.dry_run
    backup = (
        Backup.objects.filter(
            target=target, file_path=record["file_path"], checksum=record["checksum"]
        ).first()
        if target is not None
        else None
    )
    if backup is not None and backup.copies.filter(storage=storage_row).exists():
        report.known += 1
        return
    if backup is None:
        if target is None:
            line = f"{target_name} ({engine}, inactive)"
            if line not in report.targets_created:
                report.targets_created.append(line)
            report.planned_targets[target_name.lower()] = (target_name, engine)
            if not dry_run:
                target = Target.objects.create(name=target_name, engine=engine, is_active=False)
        pk = record.get("id")
        reuse = pk is not None and not Backup.objects.filter(pk=pk).exists()
        report.created.append(f"backup {pk if reuse else '(new id)'} ({record['file_path']})")
        if dry_run:
            return
        backup = Backup(pk=pk if reuse else None, target=target, **_fields(record, manifest))
        backup.save(force_insert=True)
        if record.get("base_file_path"):  # an incremental: linked once every manifest is read
            report.unlinked.append((backup.pk, record["base_file_path"]))
    else:
        report.created.append(f"copy in {storage_row.name} of backup {backup.pk} ({record['file_path']})")
        if dry_run:
            return
    BackupCopy.objects.create(
        backup=backup,
        storage=storage_row,
        path=record["file_path"],
        size=stored.size,
        etag=stored.etag[:255],
        version=stored.version[:255],
        status=CopyStatus.STORED,
    )
    logger.info("reindex of %s: indexed %s as backup %s", storage_row.name, record["file_path"], backup.pk)


def _fields(record: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for column in IMPORTED_COLUMNS:
        if column not in record:
            continue
        value = record[column]
        if column in DATETIME_COLUMNS and isinstance(value, str):
            value = parse_datetime(value)
        if value is None and column not in DATETIME_COLUMNS and column not in {"file_size", "raw_size"}:
            continue
        fields[column] = value
    fields["status"] = BackupStatus.SUCCESS
    fields["engine_info"] = chains.catalog_info(manifest.get("engine_info") or {})
    fields["initiated_by"] = fields.get("initiated_by") or "backup_reindex"
    note = f"indexed from storage by backup_reindex on {timezone.now():%Y-%m-%d %H:%M}"
    fields["notes"] = f"{fields['notes']}; {note}" if fields.get("notes") else note
    started: datetime | None = fields.get("started_at")
    if fields.get("completed_at") is None and started is not None:
        fields["completed_at"] = started
    # The copy exists and matches its manifest, which is written once every copy is confirmed:
    # stored, unless the manifest records a stronger proof.
    claimed = record.get("proof")
    fields["proof"] = claimed if claimed in Proof.values else Proof.STORED
    fields["proof_at"] = fields.get("completed_at")
    return fields


# -- reconcile -------------------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    storage: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    size_differs: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.size_differs or self.unknown or self.problems)


def reconcile(storage_row: Storage) -> ReconcileReport:
    """Compare the catalog's copies in ``storage_row`` with the files there. Reads only."""
    report = ReconcileReport(storage=storage_row.name)
    try:
        with storage_for(storage_row) as storage:
            listing = _listing(storage)
    except StorageError as exc:
        report.problems.append(str(exc))
        return report
    known: set[str] = set()
    copies = BackupCopy.objects.filter(storage=storage_row).exclude(path="").select_related("backup")
    for copy in copies.order_by("backup_id"):
        known.update({copy.path, copy.manifest_path})
        if copy.status != CopyStatus.STORED:
            if copy.status == CopyStatus.DELETED and copy.path in listing:
                report.unknown.append(
                    f"{copy.path}: backup {copy.backup_id} was deleted but the file is still here"
                )
            continue
        report.checked += 1
        item = listing.get(copy.path)
        expected = copy.size if copy.size is not None else copy.backup.file_size
        if item is None:
            report.missing.append(f"{copy.path}: backup {copy.backup_id}'s file is gone")
        elif expected is not None and item.size != expected:
            report.size_differs.append(
                f"{copy.path}: backup {copy.backup_id} is {item.size} bytes here, the catalog says {expected}"
            )
        # Files adopted from another tool (backups.watching, initiated_by "watch") have no manifest.
        if copy.manifest_path not in listing and item is not None and copy.backup.initiated_by != "watch":
            report.missing.append(f"{copy.manifest_path}: backup {copy.backup_id}'s manifest is gone")
    for path, item in sorted(listing.items()):
        if path not in known:
            report.unknown.append(f"{path}: {item.size} bytes, no catalog entry")
    return report
