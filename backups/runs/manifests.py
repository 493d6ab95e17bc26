"""The manifest beside every stored copy: everything to rebuild the catalog row and restore by hand."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

from backups.engines import Engine
from backups.models import Backup, EncryptionKey
from backups.resources import MANIFEST_FORMAT

logger = logging.getLogger(__name__)


def build_manifest(
    backup: Backup, engine: Engine, info: dict[str, Any], schedule_name: str | None = None
) -> dict[str, Any]:
    """Everything needed to rebuild the catalog entry and restore by hand (``schedule_name``:
    the run's schedule's, when the caller has it)."""
    from backupsite import __version__

    return {
        "format": MANIFEST_FORMAT,
        "backupsite_version": __version__,
        "host": platform.node(),
        "backup": backup.as_record(schedule_name),
        "target": {"name": backup.target.name, "engine": engine.key},
        "file": Path(backup.file_path).name,
        "content_type": engine.content_type,
        "engine_info": info,
        "encryption": _encryption(backup),
        "restore_by_hand": _restore_hint(backup, engine),
    }


def _encryption(backup: Backup) -> dict[str, Any]:
    """How the file is encrypted: the key id and every recipient (public keys; never an identity)."""
    if backup.encryption == "none":
        return {"format": "none"}
    names = dict(
        EncryptionKey.objects.filter(recipient__in=backup.encryption_recipients).values_list(
            "recipient", "name"
        )
    )
    return {
        "format": backup.encryption,
        "key_id": backup.encryption_key_id,
        "recipients": [
            {"recipient": recipient, "key": names.get(recipient, "")}
            for recipient in backup.encryption_recipients
        ],
        "decrypt_by_hand": f"age -d -i KEYFILE {Path(backup.file_path).name}",
    }


def _restore_hint(backup: Backup, engine: Engine) -> str:
    name = Path(backup.file_path).name
    decompress = {"gzip": f"gunzip -c {name}", "zstd": f"zstd -dc {name}", "none": f"cat {name}"}[
        backup.compression
    ]
    if backup.encryption == "age":  # KEYFILE: the age key file of any key the manifest lists
        decrypt = f"age -d -i KEYFILE {name}"
        decompress = {"gzip": f"{decrypt} | gunzip -c", "zstd": f"{decrypt} | zstd -dc", "none": decrypt}[
            backup.compression
        ]
    if engine.key == "sqlite":
        return f"{decompress} > restored.sqlite3 && sqlite3 restored.sqlite3 'PRAGMA integrity_check'"
    if engine.key == "configuration":
        return f"{decompress} | tar -xf - -C /restore/dir   (or -C / to put every file back in place)"
    if engine.key == "files" and backup.backup_type == "incremental":
        return (
            "restore the chain's full backup first, then each incremental in order "
            "(record.base_file_path names the previous link); for each, delete the paths it lists "
            "as deleted BEFORE extracting it: "
            f"(cd /restore/dir && jq -r '.engine_info.deleted[]?' {name}.manifest.json | "
            "xargs -r -d '\\n' rm -rf --) && "
            f"{decompress} | tar -xf - -C /restore/dir"
        )
    if engine.key == "files":
        return f"{decompress} | tar -xf - -C /restore/dir"
    if engine.key == "postgresql":
        return (
            f"createdb -T template0 NEWDB && {decompress} | "
            "pg_restore --no-owner --exit-on-error --single-transaction -d NEWDB"
        )
    if engine.key in ("mysql", "mariadb"):
        client = "mysql" if engine.key == "mysql" else "mariadb"
        login = "--defaults-extra-file=client.cnf"  # a 0600 [client] file with host, user, password
        return (
            f"{client} {login} -e 'CREATE DATABASE NEWDB CHARACTER SET utf8mb4' && "
            f"{decompress} | {client} {login} --binary-mode NEWDB"
        )
    if engine.key == "redis":
        return (
            f"{decompress} > dump.rdb && redis-check-rdb dump.rdb && "
            "redis-server --port 6390 --dir . --dbfilename dump.rdb --save '' --appendonly no"
        )
    if engine.key == "clickhouse":
        return (
            f"mkdir restore && {decompress} | tar -xf - -C restore; then in restore/: run each "
            "schema/NNN-*.sql of a table with clickhouse-client --multiquery, feed each table's "
            "data/NAME/*.native to clickhouse-client --query 'INSERT INTO DB.NAME FORMAT Native', "
            "then the views' schema files (archive.json lists the order and kinds)"
        )
    return decompress
