"""manage.py backup_restore: restore a backup into its source or another target."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from backups.cli import (
    MAX_ID,
    ProgressLine,
    dump_json,
    failed,
    stop_cleanly_on_sigterm,
    usage_error,
    who,
    whole_number,
)
from backups.humanize import human_bytes, relative_time
from backups.models import Backup, Target
from backups.services import record_audit
from restores.models import RestoreLog, RestoreStatus
from restores.services import (
    RestorePreview,
    RestoreRefused,
    check_directory_restorable,
    check_restorable,
    confirmation_word,
    preview_restore,
    restore_backup,
    restore_to_directory,
)


class Command(BaseCommand):
    # The run itself checks what it needs (tools, secrets, storages) and records any problem on
    # the row; the project-wide checks (`manage.py check`) only add start-up time here.
    requires_system_checks: list[str] = []
    help = (
        "Restore a backup (checksum verified first). Asks you to type the destination database's name "
        "(or the target's name for files and SQLite) unless --yes. --preview shows what the backup holds "
        "and what the restore would do, changing nothing. "
        "Exit 0: restored (or previewed), 1: restore failed, 2: refused or bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--id", type=whole_number(1, MAX_ID), required=True, dest="backup_id")
        parser.add_argument("--to", metavar="TARGET", help="destination target (default: the backup's own)")
        parser.add_argument(
            "--to-dir",
            metavar="DIR",
            help="configuration backups: the directory to restore the files under (absolute paths are "
            "laid out beneath it)",
        )
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument(
            "--preview",
            action="store_true",
            help="show what the backup holds, what must be typed to confirm and what the restore would "
            "overwrite or why it would be refused; restores nothing",
        )
        parser.add_argument(
            "--break-glass",
            metavar="REASON",
            default="",
            help="restore into a protected target without a second person's approval (an emergency: "
            "the reason goes into the audit log); otherwise ask for it in the web console",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        backup = Backup.objects.select_related("target").filter(pk=options["backup_id"]).first()
        if backup is None:
            raise usage_error(f"--id: no backup with id {options['backup_id']}")
        if options["preview"]:
            self._preview(backup, options)
            return
        if options["to_dir"] or backup.backup_type == "configuration":
            self._to_directory(backup, options)
            return
        destination = self._destination(backup, options)
        try:
            check_restorable(backup, destination)
        except RestoreRefused as exc:
            raise usage_error(str(exc)) from None
        if destination.protected and not options["break_glass"].strip():
            raise usage_error(
                f"--to: {destination.name} is protected: a second person must approve its restores; ask "
                "in the web console (Restore…), or in an emergency pass --break-glass REASON (audited)"
            )
        confirmed_by = who() + (" (--yes)" if options["yes"] else "")
        if not options["yes"]:
            self._confirm(backup, destination)
        if destination.protected:
            record_audit(
                "restore.start",
                obj=backup,
                auth_method="cli",
                username=who(),
                details={"into": destination.name, "break_glass": options["break_glass"].strip()},
            )
        line = PhasedLine(
            ProgressLine(self.stdout, f"restore {backup.pk}", backup.file_size, enabled=not options["json"])
        )
        with stop_cleanly_on_sigterm():
            log = restore_backup(
                backup,
                destination,
                initiated_by=who(),
                confirmed_by=confirmed_by,
                progress=line,
                phase=line.phase,
            )
        line.done()
        self._report(log, destination.name, options["json"])

    @staticmethod
    def _destination(backup: Backup, options: dict[str, Any]) -> Target:
        if not options["to"]:
            return backup.target
        found = Target.objects.filter(name=options["to"]).first()
        if found is None:
            raise usage_error(f"--to: no target named {options['to']!r}")
        return found

    def _preview(self, backup: Backup, options: dict[str, Any]) -> None:
        if options["to_dir"]:
            raise usage_error("--preview shows a restore into a target (--to TARGET); not with --to-dir")
        destination = self._destination(backup, options) if options["to"] else None
        preview = preview_restore(backup, destination)
        if options["json"]:
            dump_json(self.stdout, preview.as_dict())
        else:
            self.stdout.write("\n".join(preview_lines(preview)))

    def _to_directory(self, backup: Backup, options: dict[str, Any]) -> None:
        if options["to"]:
            raise usage_error("--to and --to-dir: give one destination")
        if not options["to_dir"]:
            raise usage_error(
                f"backup {backup.pk} is a configuration backup: give the directory to restore into with --to-dir DIR"
            )
        directory = Path(options["to_dir"]).expanduser().absolute()
        try:
            check_directory_restorable(backup, directory)
        except RestoreRefused as exc:
            raise usage_error(str(exc)) from None
        if not options["yes"]:
            self._confirm_directory(backup, directory)
        confirmed_by = who() + (" (--yes)" if options["yes"] else "")
        line = ProgressLine(
            self.stdout, f"restore {backup.pk}", backup.file_size, enabled=not options["json"]
        )
        with stop_cleanly_on_sigterm():
            log = restore_to_directory(
                backup, directory, initiated_by=who(), confirmed_by=confirmed_by, progress=line
            )
        line.done()
        self._report(log, str(directory), options["json"])

    def _report(self, log: RestoreLog, destination: str, as_json: bool) -> None:
        backup = log.backup
        if as_json:
            dump_json(
                self.stdout,
                {
                    "restore_id": log.pk,
                    "backup_id": backup.pk,
                    "destination": destination,
                    "status": log.status,
                    "tables_restored": log.tables_restored,
                    "files_restored": len(log.files_restored),
                    "notes": log.notes,
                    "error_message": log.error_message,
                },
            )
        elif log.status == RestoreStatus.SUCCESS:
            self.stdout.write(self.style.SUCCESS(f"restore {log.pk}: {log.notes}"))
        else:
            self.stdout.write(self.style.ERROR(f"restore {log.pk} FAILED: {log.error_message}"))
        if log.status != RestoreStatus.SUCCESS:
            raise failed(f"restore of backup {backup.pk} failed")

    def _confirm_directory(self, backup: Backup, directory: Path) -> None:
        if not sys.stdin.isatty():
            raise usage_error("not on a terminal: confirm with --yes to restore without a prompt")
        self.stdout.write(
            self.style.WARNING(
                f"This restores the configuration files of backup {backup.pk} ({backup.backup_name}) "
                f"under {directory}; what is there now is kept aside."
            )
        )
        try:
            answer = input(f"Type the directory ({directory}) to continue: ")
        except EOFError:
            answer = ""
        if answer.strip() != str(directory):
            raise usage_error("confirmation did not match; nothing was restored")

    def _confirm(self, backup: Backup, destination: Target) -> None:
        if not sys.stdin.isatty():
            raise usage_error("not on a terminal: confirm with --yes to restore without a prompt")
        where = destination.database or ", ".join(destination.paths)
        self.stdout.write(
            self.style.WARNING(
                f"This replaces the data of target {destination.name} ({destination.engine}: {where}) "
                f"with backup {backup.pk} ({backup.backup_name})."
            )
        )
        expected, what = confirmation_word(destination)
        try:
            answer = input(f"Type the {what} ({expected}) to continue: ")
        except EOFError:
            answer = ""
        if answer.strip() != expected:
            raise usage_error("confirmation did not match; nothing was restored")


class PhasedLine:
    """The progress line with where the engine is after the label ("restore 7 (pg_restore: data
    for 37 of 200 tables loaded): 1.2 GiB, ..."), redrawn when that changes: a parallel
    PostgreSQL restore works for minutes after its last byte was read."""

    def __init__(self, line: ProgressLine) -> None:
        self.line, self.label, self.last = line, line.label, 0

    def __call__(self, done: int) -> None:
        self.last = done
        self.line(done)

    def phase(self, text: str) -> None:
        self.line.label = f"{self.label} ({text})"
        self.line(self.last)

    def done(self) -> None:
        self.line.done()


def preview_lines(preview: RestorePreview) -> list[str]:
    """The preview as text for a terminal."""
    lines = [
        f"Backup {preview.backup_id}: {preview.backup_name} ({preview.engine}, {preview.backup_type})",
        f"  target       {preview.source}",
        f"  created at   {_when(preview.created_at)}",
        f"  size         {human_bytes(preview.stored_bytes)} stored ({preview.compression}), "
        f"{human_bytes(preview.raw_bytes)} raw",
        f"  checksum     {_checksum(preview)}",
        f"  copies       {', '.join(preview.copies) or 'none'}",
    ]
    if preview.encryption:
        lines.append(f"  encrypted    {preview.encryption}")
    if len(preview.chain) > 1:
        lines.append(f"  chain        {', '.join(map(str, preview.chain))} (full backup first)")
    if preview.tables:
        width = max(len(table.name) for table in preview.tables)
        lines.append(
            f"Tables ({len(preview.tables)})"
            + (f": {preview.row_counts_note}" if preview.row_counts_note else "")
        )
        lines += [
            f"  {table.name:<{width}}  {'-' if table.rows is None else table.rows}"
            for table in preview.tables
        ]
    if preview.files is not None:
        listing = preview.files
        total = f" ({listing.total}, {human_bytes(listing.total_bytes)})" if listing.total is not None else ""
        lines.append(f"Files{total}" + (f": {listing.note}" if listing.note else ""))
        lines += [f"  {human_bytes(fact.size):>10}  {fact.path}" for fact in listing.files]
    if preview.destination:
        lines += [
            f"Destination: {preview.destination} ({preview.destination_where})",
            f"  to confirm, type the {preview.confirm_what}: {preview.confirm_word}",
        ]
    if preview.overwrites is not None:
        overwritten = ", ".join(preview.overwrites.objects) or "nothing known"
        lines.append(f"Overwritten: {overwritten}")
        lines.append(f"  ({preview.overwrites.note})")
    if preview.problems:
        lines.append("The restore would be refused:")
        lines += [f"  - {problem}" for problem in preview.problems]
    lines.append("Preview only: nothing was restored.")
    return lines


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S %Z} ({relative_time(moment, timezone.now())})"


def _checksum(preview: RestorePreview) -> str:
    if preview.checksum_state == "corrupt":
        return f"CORRUPT (sha256 {preview.checksum})"
    if preview.checksum_state == "verified":
        return f"verified {_when(preview.verified_at)} (sha256 {preview.checksum})"
    return f"not verified since the backup; checked before restoring (sha256 {preview.checksum})"
