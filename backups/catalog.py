"""The catalog and the storages, compared: rebuild rows from manifests, report disagreements.

``reindex_storage`` recovers a lost application database from the backups themselves: every
``<file>.manifest.json`` next to a backup file describes its Backup row. ``reconcile`` reports
catalog copies whose files are gone or differ in size, and files no catalog entry knows. Neither
ever deletes a file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from backups.runs import chains

from .models import RECORD_COLUMNS, Backup, BackupCopy, BackupStatus, CopyStatus, Storage, Target
from .resources import MANIFEST_FORMAT, MANIFEST_SUFFIX, storage_for
from .storages import BackupStorage, StorageError, StoredObject

logger = logging.getLogger(__name__)
DATETIME_COLUMNS = {"started_at", "completed_at", "verified_at", "expires_at", "created_at", "deleted_at"}


@dataclass
class ReindexReport:
    storage: str
    dry_run: bool
    created: list[str] = field(default_factory=list)  # "backup N (path)" or "copy ... of backup N"
    known: int = 0
    targets_created: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Incrementals indexed before their base: (backup id, the base's file path), linked at the end.
    unlinked: list[tuple[int, str]] = field(default_factory=list)


def _listing(storage: BackupStorage) -> dict[str, StoredObject]:
    return {item.path: item for item in storage.list_objects()}


def reindex_storage(storage_row: Storage, *, dry_run: bool = False) -> ReindexReport:
    """Create the Backup and BackupCopy rows missing for the manifests found in ``storage_row``."""
    report = ReindexReport(storage=storage_row.name, dry_run=dry_run)
    with storage_for(storage_row) as storage:  # one connection for the listing and the manifests
        listing = _listing(storage)
        for path in sorted(listing):
            if not path.endswith(MANIFEST_SUFFIX):
                continue
            file_path = path.removesuffix(MANIFEST_SUFFIX)
            try:
                manifest = json.loads(storage.read_bytes(path, limit=chains.MANIFEST_LIMIT))
                record, target_info = _parse(manifest, file_path)
            except (StorageError, ValueError, KeyError, TypeError) as exc:
                report.problems.append(f"{path}: not a readable Backupsite manifest ({exc})")
                continue
            stored = listing.get(file_path)
            if stored is None:
                report.problems.append(f"{path}: its backup file {file_path} is missing")
                continue
            if record.get("file_size") is not None and stored.size != record["file_size"]:
                report.problems.append(
                    f"{file_path}: {stored.size} bytes in storage, the manifest says {record['file_size']}"
                )
                continue
            with transaction.atomic():
                _index_one(report, storage_row, record, target_info, manifest, stored, dry_run)
    _link_bases(report)
    return report


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


def _parse(manifest: Any, file_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"unknown manifest format {manifest.get('format') if isinstance(manifest, dict) else '?'}"
        )
    record, target = manifest["backup"], manifest["target"]
    if not isinstance(record, dict) or not isinstance(target, dict) or not target.get("name"):
        raise ValueError("no backup record or target")
    if record.get("file_path") != file_path:
        raise ValueError(f"it describes {record.get('file_path')!r}, not {file_path!r}")
    if not record.get("checksum"):
        raise ValueError("no checksum")
    return record, target


def _index_one(
    report: ReindexReport,
    storage_row: Storage,
    record: dict[str, Any],
    target_info: dict[str, Any],
    manifest: dict[str, Any],
    stored: StoredObject,
    dry_run: bool,
) -> None:
    backup = Backup.objects.filter(
        target__name=target_info["name"], file_path=record["file_path"], checksum=record["checksum"]
    ).first()
    if backup is not None and backup.copies.filter(storage=storage_row).exists():
        report.known += 1
        return
    if backup is None:
        target = Target.objects.filter(name=target_info["name"]).first()
        if target is None:
            report.targets_created.append(
                f"{target_info['name']} ({target_info.get('engine', '?')}, inactive)"
            )
            if not dry_run:
                target = Target.objects.create(
                    name=target_info["name"],
                    engine=target_info.get("engine", ""),
                    is_active=False,
                )
        pk = record.get("id")
        reuse = isinstance(pk, int) and not Backup.objects.filter(pk=pk).exists()
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
    for column in RECORD_COLUMNS:
        if column not in record or column in {"created_at", "deleted_at", "progress"}:
            continue
        value = record[column]
        if column in DATETIME_COLUMNS and isinstance(value, str):
            value = parse_datetime(value)
        if value is None and column not in DATETIME_COLUMNS and column not in {"file_size", "raw_size"}:
            continue
        fields[column] = value
    # A manifest is written only once every copy is stored and confirmed.
    fields["status"] = BackupStatus.SUCCESS
    fields["engine_info"] = chains.catalog_info(manifest.get("engine_info") or {})
    fields["initiated_by"] = fields.get("initiated_by") or "backup_reindex"
    note = f"indexed from storage by backup_reindex on {timezone.now():%Y-%m-%d %H:%M}"
    fields["notes"] = f"{fields['notes']}; {note}" if fields.get("notes") else note
    started: datetime | None = fields.get("started_at")
    if fields.get("completed_at") is None and started is not None:
        fields["completed_at"] = started
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
        if copy.manifest_path not in listing and item is not None:
            report.missing.append(f"{copy.manifest_path}: backup {copy.backup_id}'s manifest is gone")
    for path, item in sorted(listing.items()):
        if path not in known:
            report.unknown.append(f"{path}: {item.size} bytes, no catalog entry")
    return report
