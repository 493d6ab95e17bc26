"""manage.py backup_drill: restore a backup into a scratch copy on the sandbox, check it, drop it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups import services
from backups.cli import MAX_ID, dump_json, failed, usage_error, who, whole_number
from backups.models import Backup, DrillStatus, Target


class Command(BaseCommand):
    requires_system_checks: list[str] = []
    help = (
        "Drill a restore: the target's newest successful backup (or --id) restored into a scratch "
        "database on its sandbox (a scratch directory for SQLite and files), checked, and dropped. "
        "Exit 0 passed, 1 failed, 2 usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", required=True, metavar="NAME")
        parser.add_argument(
            "--id", type=whole_number(1, MAX_ID), dest="backup_id", help="the backup to drill"
        )
        parser.add_argument("--json", action="store_true", help="print the drill as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        target = Target.objects.select_related("sandbox").filter(name=options["target"]).first()
        if target is None:
            raise usage_error(f"--target: no target named {options['target']!r}")
        backup = None
        if options["backup_id"] is not None:
            backup = Backup.objects.select_related("target").filter(pk=options["backup_id"]).first()
            if backup is None:
                raise usage_error(f"--id: no backup with id {options['backup_id']}")
            if backup.target_id != target.pk:
                raise usage_error(
                    f"--id: backup {backup.pk} belongs to target {backup.target.name}, not {target.name}"
                )
        try:
            drill = services.run_drill(target, backup=backup, trigger="manual", initiated_by=who())
        except services.DrillRefused as exc:
            raise failed(str(exc)) from None
        if options["json"]:
            dump_json(self.stdout, services.drill_dict(drill))
        else:
            self._print(drill)
        if drill.status != DrillStatus.PASSED:
            raise failed(f"drill {drill.pk} of target {target.name} failed: {drill.error_message}")

    def _print(self, drill: Any) -> None:
        passed = drill.status == DrillStatus.PASSED
        style = self.style.SUCCESS if passed else self.style.ERROR
        self.stdout.write(
            style(f"drill {drill.pk} of {drill.target.name}, backup {drill.backup_id}: {drill.status}")
        )
        for check in drill.checks:
            mark = "ok  " if check["ok"] else "FAIL"
            self.stdout.write(
                f"  {mark} {check['name']}: expected {check['expected']}, got {check['actual']}"
            )
        for label, value in (
            ("restore time", drill.restore_seconds),
            ("whole drill", drill.duration_seconds),
            ("data age", drill.data_age_seconds),
        ):
            if value is not None:
                self.stdout.write(f"  {label}: {value:.1f} s")
