"""manage.py backup_list: the backup history, newest first."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups.cli import dump_json, human_bytes, usage_error, whole_number
from backups.models import Backup, BackupStatus, Target

MAX_LIMIT = 1_000_000_000


class Command(BaseCommand):
    help = "List backups, newest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", metavar="NAME")
        parser.add_argument("--status", metavar="STATUS", help=", ".join(BackupStatus.values))
        parser.add_argument(
            "--limit", type=whole_number(0, MAX_LIMIT), default=0, help="at most this many (0: all)"
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        backups = (
            Backup.objects.select_related("target", "schedule")
            .prefetch_related("copies__storage")
            .order_by("-created_at", "-id")
        )
        if options["target"]:
            if not Target.objects.filter(name=options["target"]).exists():
                raise usage_error(f"--target: unknown target {options['target']!r}")
            backups = backups.filter(target__name=options["target"])
        if options["status"]:
            status = options["status"].lower()
            if status not in BackupStatus.values:
                raise usage_error(f"--status: must be one of {', '.join(BackupStatus.values)}")
            backups = backups.filter(status=status)
        rows = list(backups[: options["limit"]] if options["limit"] else backups)
        if options["json"]:
            dump_json(
                self.stdout,
                [{**backup.as_record(), **_proof(backup), "copies": _copies(backup)} for backup in rows],
            )
            return
        if not rows:
            self.stdout.write("no backups")
            return
        self.stdout.write(
            f"{'ID':>6}  {'TARGET':<20} {'TYPE':<9} {'STATUS':<8} {'STARTED':<20} {'SIZE':>10}  {'PROOF':<8}  COPIES"
        )
        for b in rows:
            started = b.started_at.strftime("%Y-%m-%d %H:%M:%S") if b.started_at else "-"
            status = "deleted" if b.deleted_at else b.status
            self.stdout.write(
                f"{b.pk:>6}  {b.target.name:<20} {b.backup_type:<9} {status:<8} {started:<20} "
                f"{human_bytes(b.file_size):>10}  {b.proof or '-':<8}  "
                + ", ".join(
                    f"{c['storage']}{'' if c['status'] == 'stored' else ' (' + c['status'] + ')'}"
                    for c in _copies(b)
                )
            )


def _proof(backup: Backup) -> dict[str, Any]:
    """The strongest proof that it restores (stored < verified < trial < drilled) and when."""
    return {
        "proof": backup.proof or None,
        "proof_at": backup.proof_at.isoformat() if backup.proof_at else None,
    }


def _copies(backup: Backup) -> list[dict[str, Any]]:
    return [
        {"storage": copy.storage.name, "path": copy.path, "size": copy.size, "status": copy.status,
         "etag": copy.etag, "version": copy.version, "error": copy.error_message}
        for copy in sorted(backup.copies.all(), key=lambda copy: copy.storage.name)
    ]  # fmt: skip
