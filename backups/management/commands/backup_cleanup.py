"""manage.py backup_cleanup: delete backups the target's retention settings no longer keep."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups import services
from backups.cli import dump_json, failed, usage_error
from backups.models import Target


class Command(BaseCommand):
    help = (
        "Apply retention (retention_days, max_backups; the newest successful backup is always kept), "
        "then remove upload leftovers older than a day from every storage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", metavar="NAME")
        parser.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        targets = Target.objects.all()
        if options["target"]:
            targets = targets.filter(name=options["target"])
            if not targets:
                raise usage_error(f"--target: unknown target {options['target']!r}")
        plans = [services.cleanup_target(target, dry_run=options["dry_run"]) for target in targets]
        swept, sweep_errors = ([], []) if options["dry_run"] else services.sweep_storages()
        if options["json"]:
            dump_json(
                self.stdout,
                {
                    "targets": [
                        {
                            "target": plan.target.name,
                            "dry_run": options["dry_run"],
                            "keep": [{"id": b.pk, "reason": reason} for b, reason in plan.keep],
                            "delete": [{"id": b.pk, "reason": reason} for b, reason in plan.delete],
                            "errors": plan.errors,
                        }
                        for plan in plans
                    ],
                    "swept": swept,
                    "sweep_errors": sweep_errors,
                },
            )
        else:
            verb = "would delete" if options["dry_run"] else "deleted"
            for plan in plans:
                self.stdout.write(f"{plan.target.name}: keep {len(plan.keep)}, {verb} {len(plan.delete)}")
                for backup, reason in plan.delete:
                    self.stdout.write(f"  {verb} {backup.pk} {backup.backup_name}: {reason}")
                for error in plan.errors:
                    self.stdout.write(self.style.ERROR(f"  error: {error}"))
            for line in swept:
                self.stdout.write(line)
            for error in sweep_errors:
                self.stdout.write(self.style.ERROR(f"sweep error: {error}"))
        if any(plan.errors for plan in plans):
            raise failed("some backups could not be deleted")
        if sweep_errors:
            raise failed("some storages could not be swept")
