"""manage.py backup_reconcile: compare the catalog with the files in storage; report only."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups import services
from backups.cli import dump_json, failed, usage_error
from backups.models import Storage


class Command(BaseCommand):
    requires_system_checks: list[str] = []
    help = (
        "Report catalog entries whose files are gone or differ in size, and files no catalog entry "
        "knows. Deletes nothing. Exits 1 when anything disagrees."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--storage", metavar="NAME", help="one storage (default: every storage)")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = Storage.objects.order_by("name")
        if options["storage"]:
            rows = rows.filter(name=options["storage"])
            if not rows.exists():
                raise usage_error(f"--storage: no storage named {options['storage']!r}")
        reports = [services.reconcile(row) for row in rows]
        if options["json"]:
            dump_json(self.stdout, [{**r.__dict__, "clean": r.clean} for r in reports])
        else:
            for report in reports:
                style = self.style.SUCCESS if report.clean else self.style.WARNING
                self.stdout.write(style(f"storage {report.storage}: {report.checked} copies checked"))
                for label, lines in (
                    ("missing", report.missing),
                    ("size differs", report.size_differs),
                    ("unknown", report.unknown),
                    ("problem", report.problems),
                ):
                    for line in lines:
                        self.stdout.write(f"  {label}: {line}")
        if not all(report.clean for report in reports):
            raise failed("the catalog and the storage disagree (nothing was changed)")
