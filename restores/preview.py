"""The restore preview: what a backup holds and what restoring it into a destination would do.

Everything comes from the catalog rows, except the file list of a files backup, which only the
manifest stored beside it holds (its ``index``, one entry per path, possibly millions). That
manifest is read as a stream and only until :data:`FILES_SHOWN` files are listed or
:data:`MANIFEST_READ_LIMIT` bytes are read; the totals come from the catalog. A preview reads and
never writes: building one changes nothing anywhere.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, BinaryIO

from backups import services as backup_services
from backups.models import Backup, BackupStatus, Target
from backups.services import ServiceError, describe_error, redact, storage_for, stored_copies

from .refusals import confirmation_word, restore_problems, usability_problems

FILES_SHOWN = 200  # files listed from a manifest's index; the total is in the catalog
MANIFEST_READ_LIMIT = 8 * 1024 * 1024  # bytes of a manifest read for a preview, at most
_CHUNK = 64 * 1024

# The manifest is written by backups.runs.service with json.dumps(indent=2, sort_keys=True): the
# engine info's keys sit at four spaces, the index's entries at six, one entry per line.
_INDEX_START = '    "index": {'
_INDEX_END = "    }"
_ENTRY_INDENT = " " * 6


@dataclass(frozen=True)
class TableFact:
    name: str
    rows: int | None = None  # None: the dump recorded no count for it


@dataclass(frozen=True)
class FileFact:
    path: str  # "<root name>/<relative path>", as in the archive
    size: int


@dataclass(frozen=True)
class FileListing:
    """Files of a files backup: the first :data:`FILES_SHOWN` of its manifest, with totals."""

    files: tuple[FileFact, ...]
    total: int | None  # regular files in the backup (catalog), None when unknown
    total_bytes: int | None  # their bytes (catalog)
    note: str = ""  # why the list is partial or missing


@dataclass(frozen=True)
class Overwrites:
    """What a restore would overwrite at the destination.

    No engine can list what a destination holds *now* without reading it (a full catalog scan or
    a row count), so the preview says so, and names the objects of the backup that the
    destination's own last backup held, as recorded in the catalog.
    """

    objects: tuple[str, ...]  # of the backup's tables (or directories) the destination held too
    recorded_by: int | None  # the destination's last backup those come from; None: no backup
    recorded_at: datetime | None
    note: str


@dataclass(frozen=True)
class RestorePreview:
    """What a restore of ``backup_id`` into ``destination`` would do; ``problems`` empty when it
    can start. Built by :func:`preview_restore`."""

    backup_id: int
    backup_name: str
    source: str  # the backup's target
    engine: str
    backup_type: str
    status: str
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    stored_bytes: int | None
    raw_bytes: int | None
    compression: str
    checksum: str
    checksum_state: str  # "verified", "unverified" or "corrupt"
    encryption: str  # "" unencrypted; else its keys and whether this host can decrypt them
    verified_at: datetime | None
    chain: tuple[int, ...]  # the backups a restore applies, full backup first
    copies: tuple[str, ...]  # storages holding a stored copy
    tables: tuple[TableFact, ...]
    row_counts_note: str
    files: FileListing | None
    destination: str  # the target's name; "" when there is none
    destination_id: int | None
    destination_where: str  # its database, or its paths
    confirm_word: str  # what the operator must type
    confirm_what: str  # "destination database's name" or "destination's name"
    overwrites: Overwrites | None
    problems: tuple[str, ...]

    @property
    def restorable(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (times in ISO 8601)."""
        return {**_plain(asdict(self)), "restorable": self.restorable}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def preview_restore(backup: Backup, destination: Target | None = None) -> RestorePreview:
    """What restoring ``backup`` into ``destination`` (default: its own target) would do: what the
    backup holds, what the operator must type, what the destination held, every problem that
    would refuse it. Changes nothing."""
    if destination is None and backup.backup_type != "configuration":
        destination = backup.target
    try:
        chain = tuple(link.pk for link in backup_services.chain_of(backup))
    except ServiceError:
        chain = (backup.pk,)
    tables, row_counts_note = tables_of(backup)
    word, what = confirmation_word(destination) if destination is not None else ("", "")
    return RestorePreview(
        backup_id=backup.pk,
        backup_name=backup.backup_name,
        source=backup.target.name,
        engine=backup.target.engine,
        backup_type=backup.backup_type,
        status=backup.status,
        created_at=backup.created_at,
        started_at=backup.started_at,
        completed_at=backup.completed_at,
        stored_bytes=backup.file_size,
        raw_bytes=backup.raw_size,
        compression=backup.compression,
        checksum=backup.checksum,
        checksum_state=checksum_state(backup),
        encryption=encryption_note(backup),
        verified_at=backup.verified_at,
        chain=chain,
        copies=tuple(copy.storage.name for copy in stored_copies(backup)),
        tables=tables,
        row_counts_note=row_counts_note,
        files=listing_of(backup),
        destination=destination.name if destination else "",
        destination_id=destination.pk if destination else None,
        destination_where=_where(destination) if destination else "",
        confirm_word=word,
        confirm_what=what,
        overwrites=overwrites_of(backup, destination) if destination else None,
        problems=tuple(
            restore_problems(backup, destination)
            if destination is not None
            else _configuration_problems(backup)
        ),
    )


def encryption_note(backup: Backup) -> str:
    """How the backup (each link of its chain) is encrypted and whether this host has a key for
    it: "" when nothing is encrypted. Informational: the restore runs where the worker is, and
    refuses there, before touching anything, when that host has no key."""
    try:
        chain = backup_services.chain_of(backup)
    except ServiceError:
        chain = [backup]
    notes = []
    for link in chain:
        if link.encryption == "none":
            continue
        try:
            backup_services.identities_for(link)
            here = "this host can decrypt it"
        except ServiceError:
            here = "this host has no identity for it (a restore elsewhere needs one there)"
        prefix = f"backup {link.pk}: " if len(chain) > 1 else ""
        notes.append(f"{prefix}age, to {backup_services.describe_keys(link)}; {here}")
    return "; ".join(notes)


def _where(destination: Target) -> str:
    return f"{destination.engine}: {destination.database or ', '.join(destination.paths)}"


def _configuration_problems(backup: Backup) -> list[str]:
    return [
        f"backup {backup.pk} is a configuration backup: restore it into a directory with "
        f"manage.py backup_restore --id {backup.pk} --to-dir DIR",
        *usability_problems(backup),
    ]


def checksum_state(backup: Backup) -> str:
    if backup.status == BackupStatus.CORRUPT:
        return "corrupt"
    return "verified" if backup.verified else "unverified"


def tables_of(backup: Backup) -> tuple[tuple[TableFact, ...], str]:
    """The backup's tables with the row counts its dump recorded, and what those counts are."""
    info = backup.engine_info or {}
    counts = info.get("row_counts")
    counts = counts if isinstance(counts, dict) else {}
    names = [str(name) for name in backup.tables_included or []]
    if not names and isinstance(info.get("keyspace"), dict):  # Redis: keys per logical database
        keyspace = info["keyspace"]
        facts = tuple(TableFact(name, _int(values.get("keys"))) for name, values in sorted(keyspace.items()))
        return facts, str(info.get("keyspace_note", ""))
    facts = tuple(TableFact(name, _int(counts.get(name))) for name in names)
    if not counts:
        note = "the dump recorded no row counts" if names else ""
    elif info.get("row_counts_exact"):
        note = "row counts are exact: what the dump holds"
    else:
        note = "row counts are approximate" + (
            f": {info['row_counts_note']}" if info.get("row_counts_note") else ""
        )
    return facts, note


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def listing_of(backup: Backup) -> FileListing | None:
    """The files a files (or configuration) backup holds; None for a database backup."""
    info = backup.engine_info or {}
    total, total_bytes = _int(info.get("files")), _int(info.get("bytes"))
    if backup.backup_type == "configuration":
        saved = ", ".join(str(path) for path in backup.files_included or [])
        return FileListing((), total, total_bytes, note=f"configuration paths saved: {saved}")
    if not isinstance(info.get("roots"), dict):
        return None
    try:
        files, complete = _files_from_manifest(backup)
    except _Unreadable as exc:
        return FileListing((), total, total_bytes, note=f"the manifest cannot be read: {exc}")
    if complete or (total is not None and total <= len(files)):
        return FileListing(tuple(files), total, total_bytes)
    shown = f"the first {len(files)} of {total if total is not None else 'more'} files"
    return FileListing(tuple(files), total, total_bytes, note=shown)


class _Unreadable(Exception):
    pass


def _files_from_manifest(backup: Backup) -> tuple[list[FileFact], bool]:
    """The first :data:`FILES_SHOWN` regular files of the manifest's index, and whether that is
    all of them. Raises :class:`_Unreadable` when no stored copy has a readable manifest."""
    problems: list[str] = []
    for copy in stored_copies(backup):
        try:
            with (
                storage_for(copy.storage) as storage,
                contextlib.closing(storage.open_reader(copy.manifest_path)) as handle,
            ):
                found = _scan_index(handle)
        except Exception as exc:
            problems.append(f"storage {copy.storage.name}: {redact(describe_error(exc))}")
            continue
        if found is not None:
            return found
        problems.append(
            f"storage {copy.storage.name}: no file index in the first {MANIFEST_READ_LIMIT} bytes"
        )
    raise _Unreadable("; ".join(problems) or "no stored copy")


def _scan_index(handle: BinaryIO) -> tuple[list[FileFact], bool] | None:
    files: list[FileFact] = []
    inside = False
    for line in _lines(handle, MANIFEST_READ_LIMIT):
        if not inside:
            if line.startswith('    "index": {}'):
                return files, True
            inside = line == _INDEX_START
            continue
        if line.startswith(_INDEX_END):
            return files, True
        if not line.startswith(_ENTRY_INDENT + '"'):
            continue
        ((path, entry),) = json.loads("{" + line.strip().removesuffix(",") + "}").items()
        if isinstance(entry, str) and entry.startswith("f "):
            files.append(FileFact(path, int(entry.split(" ", 2)[1])))
            if len(files) == FILES_SHOWN:
                return files, False
    return (files, False) if inside else None


def _lines(handle: BinaryIO, limit: int) -> Iterator[str]:
    """Lines of ``handle`` (without their ends) until ``limit`` bytes were read."""
    pending = b""
    read = 0
    while read < limit:
        chunk = handle.read(min(_CHUNK, limit - read))
        if not chunk:
            break
        read += len(chunk)
        pending += chunk
        *whole, pending = pending.split(b"\n")
        for line in whole:
            yield line.decode("utf-8", "surrogateescape")
    if pending and read < limit:
        yield pending.decode("utf-8", "surrogateescape")


def objects_of(backup: Backup) -> tuple[str, ...]:
    """What a restore of ``backup`` writes, by name: its tables, else its directories."""
    if backup.tables_included:
        return tuple(str(name) for name in backup.tables_included)
    roots = (backup.engine_info or {}).get("roots")
    return tuple(sorted(roots)) if isinstance(roots, dict) else ()


def overwrites_of(backup: Backup, destination: Target) -> Overwrites:
    """The backup's objects the destination held as of its own last successful backup."""
    cannot = f"the {destination.engine} engine cannot tell cheaply what {destination.name} holds now"
    last = (
        Backup.objects.filter(target=destination, status=BackupStatus.SUCCESS, deleted_at__isnull=True)
        .exclude(backup_type="configuration")
        .order_by("-started_at", "-id")
        .first()
    )
    if last is None:
        return Overwrites((), None, None, f"{cannot}, and it has no backup in the catalog to tell from")
    held = set(objects_of(last))
    objects = tuple(name for name in objects_of(backup) if name in held)
    return Overwrites(
        objects,
        last.pk,
        last.started_at,
        f"{cannot}; as of its last backup ({last.pk}) it held {len(objects)} of the "
        f"{len(objects_of(backup))} the backup restores",
    )
