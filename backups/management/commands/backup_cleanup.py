"""manage.py backup_cleanup: apply each target's retention policy, then sweep upload leftovers."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups import services
from backups.cli import dump_json, failed, usage_error
from backups.models import Target


class Command(BaseCommand):
    help = (
        "Apply retention per target and schedule: delete every copy and manifest of the backups the "
        "policy no longer keeps (rows stay, marked deleted). The newest successful and newest verified "
        "backups are always kept; a run that would delete more than max_delete_fraction (default 0.5) "
        "of a target's backups is refused unless --force. Then remove upload leftovers older than a "
        "day from every storage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", metavar="NAME")
        parser.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")
        parser.add_argument(
            "--force", action="store_true", help="delete even beyond the policy's max_delete_fraction"
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        targets = Target.objects.all()
        if options["target"]:
            targets = targets.filter(name=options["target"])
            if not targets:
                raise usage_error(f"--target: unknown target {options['target']!r}")
        dry_run = options["dry_run"]
        plans = [
            services.cleanup_target(target, dry_run=dry_run, force=options["force"]) for target in targets
        ]
        swept, sweep_errors = ([], []) if dry_run else services.sweep_storages()
        if options["json"]:
            dump_json(
                self.stdout,
                {
                    "targets": [
                        {
                            "target": plan.target.name,
                            "dry_run": dry_run,
                            "refused": plan.refused,
                            "keep": [{"id": b.pk, "reasons": list(reasons)} for b, reasons in plan.keep],
                            "delete": [{"id": b.pk, "reason": reason} for b, reason in plan.delete],
                            "deleted": [b.pk for b in plan.deleted],
                            "errors": plan.errors,
                        }
                        for plan in plans
                    ],
                    "swept": swept,
                    "sweep_errors": sweep_errors,
                },
            )
        else:
            for plan in plans:
                self._describe(plan, dry_run)
            for line in swept:
                self.stdout.write(line)
            for error in sweep_errors:
                self.stdout.write(self.style.ERROR(f"sweep error: {error}"))
        if any(plan.errors for plan in plans):
            raise failed("some backups could not be deleted or planned; see the errors above")
        if any(plan.refused and not dry_run and not options["force"] for plan in plans):
            raise failed("the safety brake refused a cleanup; see above")
        if sweep_errors:
            raise failed("some storages could not be swept")

    def _describe(self, plan: services.CleanupPlan, dry_run: bool) -> None:
        name = plan.target.name
        if dry_run:
            self.stdout.write(f"{name}: would keep {len(plan.keep)}, would delete {len(plan.delete)}")
        else:
            self.stdout.write(
                f"{name}: kept {len(plan.keep)}, deleted {len(plan.deleted)} of {len(plan.delete)}"
            )
        if plan.refused:
            self.stdout.write(self.style.WARNING(f"  {plan.refused}"))
        deleted = {backup.pk for backup in plan.deleted}
        for backup, reasons in plan.keep:
            self.stdout.write(f"  keep    {backup.pk:>6} {backup.backup_name}: {', '.join(reasons)}")
        for backup, reason in plan.delete:
            verb = (
                "deleted" if backup.pk in deleted else "delete " if dry_run or not plan.refused else "refused"
            )
            self.stdout.write(f"  {verb} {backup.pk:>6} {backup.backup_name}: {reason}")
        for error in plan.errors:
            self.stdout.write(self.style.ERROR(f"  error: {error}"))
