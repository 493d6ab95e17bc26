"""Incremental chains: which backup an incremental builds on, the chain a restore must apply,
and the manifests (with the engine's file index) that link them.

A chain is a full backup followed by incrementals, each built on the one before (``Backup.base``).
The file index an incremental compares against lives only in the previous link's manifest in
storage (it can be large), never in the database; ``engine_info`` in the catalog keeps the small
facts.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from backups import secrets
from backups.models import Backup, BackupStatus, CopyStatus
from backups.resources import MANIFEST_SUFFIX, ServiceError, storage_for, stored_copies
from backups.runs.steps import describe_error, record_step

logger = logging.getLogger(__name__)

#: Types whose archive holds a whole tree an incremental can build on.
CHAIN_TYPES = ("full", "files", "incremental")
#: Keys of an engine's dump info kept in the manifest only (too large for the catalog row).
MANIFEST_ONLY = ("index",)
MANIFEST_LIMIT = 1024 * 1024 * 1024  # a manifest holding the index of millions of files


def catalog_info(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` without what only the manifest keeps."""
    return {key: value for key, value in info.items() if key not in MANIFEST_ONLY}


def previous_link(backup: Backup) -> Backup | None:
    """The backup an incremental run of ``backup.target`` builds on: its newest intact full or
    incremental backup (any schedule: a weekly full schedule and a daily incremental one form one
    chain), or None when there is none to build on."""
    candidates = (
        Backup.objects.filter(
            target_id=backup.target_id,
            status=BackupStatus.SUCCESS,
            deleted_at__isnull=True,
            backup_type__in=CHAIN_TYPES,
        )
        .exclude(pk=backup.pk)
        .order_by("-started_at", "-id")
    )
    for candidate in candidates[:20]:
        if not candidate.copies.filter(status=CopyStatus.STORED).exists():
            continue
        try:
            chain_of(candidate)
        except ServiceError as exc:
            logger.warning("backup %s cannot be built on: %s", candidate.pk, exc)
            continue
        return candidate
    return None


def chain_of(backup: Backup) -> list[Backup]:
    """``backup`` and every backup it depends on, full backup first. Raises ServiceError when a
    link is gone (deleted, failed) or the chain loops."""
    chain = [backup]
    seen = {backup.pk}
    while chain[-1].base_id is not None:
        base = Backup.objects.select_related("target").filter(pk=chain[-1].base_id).first()
        if base is None or base.pk in seen:
            raise ServiceError(
                f"backup {chain[-1].pk} depends on backup {chain[-1].base_id}, which is missing"
            )
        if base.deleted_at is not None or base.status != BackupStatus.SUCCESS:
            state = "deleted" if base.deleted_at is not None else base.status
            raise ServiceError(
                f"backup {chain[-1].pk} depends on backup {base.pk}, which is {state}; "
                "the chain cannot be restored past it"
            )
        seen.add(base.pk)
        chain.append(base)
    chain.reverse()
    return chain


def load_manifest(backup: Backup) -> dict[str, Any]:
    """The manifest stored beside ``backup``, read from the first copy that has a readable one."""
    problems: list[str] = []
    for copy in stored_copies(backup):
        try:
            with storage_for(copy.storage) as storage:
                data = storage.read_bytes(copy.manifest_path, limit=MANIFEST_LIMIT)
            manifest = json.loads(data)
        except Exception as exc:
            problems.append(f"storage {copy.storage.name}: {secrets.redact(describe_error(exc))}")
            continue
        if isinstance(manifest, dict):
            return manifest
        problems.append(f"storage {copy.storage.name}: the manifest is not a JSON object")
    raise ServiceError(
        f"cannot read the manifest of backup {backup.pk} ({backup.file_path}{MANIFEST_SUFFIX}): "
        + ("; ".join(problems) or "no stored copy")
    )


def dependents(ids: set[int]) -> set[int]:
    """Ids among ``ids`` that a live backup (kept, running or about to run) outside ``ids`` is
    built on, directly or through other members of ``ids``."""
    protected: set[int] = set()
    frontier = set(
        Backup.objects.filter(base_id__in=ids, deleted_at__isnull=True)
        .exclude(pk__in=ids)
        .filter(status__in=(BackupStatus.SUCCESS, BackupStatus.RUNNING, BackupStatus.PENDING))
        .values_list("base_id", flat=True)
    )
    while frontier:
        protected |= frontier
        frontier = (
            set(
                Backup.objects.filter(pk__in=frontier).exclude(base_id=None).values_list("base_id", flat=True)
            )
            & ids
        ) - protected
    return protected


def link_to_previous(backup: Backup) -> dict[str, Any] | None:
    """Set ``backup.base`` to the link an incremental builds on and return that link's engine
    info (with its file index, from its manifest). With nothing to build on, the run becomes a
    full backup, and says so. Recorded as the run's ``chain`` step."""
    with record_step(backup, "chain") as step:
        base = previous_link(backup)
        if base is None:
            backup.backup_type = "full"
            backup.backup_name = backup.backup_name.replace("-incremental-", "-full-", 1)
            backup.notes = "made a full backup: no earlier full or incremental backup to build on"
            step.message = backup.notes
            return None
        manifest = load_manifest(base)
        info = manifest.get("engine_info")
        if not isinstance(info, dict):
            raise ServiceError(f"the manifest of backup {base.pk} has no engine_info to build on")
        backup.base = base
        depth = len(chain_of(base))
        step.message = f"built on backup {base.pk} ({base.backup_type}); link {depth + 1} of its chain"
        return info
