"""manage.py backup_create: back up targets now (every active target when none is named)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups import services
from backups.cli import (
    ProgressLine,
    dump_json,
    failed,
    human_bytes,
    stop_cleanly_on_sigterm,
    usage_error,
    who,
)
from backups.models import Backup, BackupStatus, BackupType, Target


class Command(BaseCommand):
    # The run itself checks what it needs (tools, secrets, storages) and records any problem on
    # the row; the project-wide checks (`manage.py check`) only add start-up time here.
    requires_system_checks: list[str] = []
    help = "Back up one or more targets now. Exit 0: all succeeded, 1: a backup failed, 2: bad usage."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", action="append", dest="targets", metavar="NAME", help="repeatable")
        parser.add_argument("--type", dest="backup_type", default="full", choices=BackupType.values)
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        backup_type: str = options["backup_type"]
        targets = self._targets(options["targets"], backup_type)
        results: list[Backup] = []
        for target in targets:
            previous = (
                Backup.objects.filter(target=target, status=BackupStatus.SUCCESS)
                .order_by("-started_at")
                .first()
            )
            line = ProgressLine(
                self.stdout, target.name, previous.raw_size if previous else None, enabled=not options["json"]
            )
            try:
                with stop_cleanly_on_sigterm():
                    backup = services.run_backup(
                        target, backup_type=backup_type, initiated_by=who(), progress=line
                    )
            except services.CatalogUnreachable as exc:
                line.done()
                raise failed(str(exc)) from None
            line.done()
            results.append(backup)
            if not options["json"]:
                self._report(backup)
        if options["json"]:
            dump_json(self.stdout, [backup.as_record() for backup in results])
        failures = [b for b in results if b.status == BackupStatus.FAILED]
        if failures:
            raise failed(f"{len(failures)} of {len(results)} backup(s) failed")

    def _targets(self, names: list[str] | None, backup_type: str) -> list[Target]:
        if not names:
            active = [
                t for t in Target.objects.filter(is_active=True) if services.supports_type(t, backup_type)
            ]
            if not active:
                raise usage_error(
                    f"no active target makes {backup_type} backups; declare one with backup_config apply"
                )
            return active
        found = {t.name: t for t in Target.objects.filter(name__in=names)}
        missing = [name for name in names if name not in found]
        if missing:
            known = ", ".join(Target.objects.values_list("name", flat=True)) or "none"
            raise usage_error(f"--target: unknown target(s) {', '.join(missing)}; known targets: {known}")
        for target in found.values():
            problem = services.type_problem(target, backup_type)
            if problem:
                raise usage_error(f"--type {backup_type}: {problem}")
        return [found[name] for name in dict.fromkeys(names)]

    def _report(self, backup: Backup) -> None:
        if backup.status == BackupStatus.SUCCESS:
            self.stdout.write(
                self.style.SUCCESS(
                    f"{backup.target.name}: backup {backup.pk} succeeded, {human_bytes(backup.file_size)} stored "
                    f"({human_bytes(backup.raw_size)} dumped) in {backup.duration_seconds:.1f}s -> {backup.file_path}"
                )
            )
        elif backup.status == BackupStatus.SKIPPED:
            self.stdout.write(
                self.style.WARNING(f"{backup.target.name}: backup {backup.pk} skipped: {backup.notes}")
            )
        else:
            self.stdout.write(
                self.style.ERROR(f"{backup.target.name}: backup {backup.pk} FAILED: {backup.error_message}")
            )
