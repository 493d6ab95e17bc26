"""manage.py backup_reindex: rebuild missing catalog rows from the manifests in a storage.

Exit status: 0 when every manifest was indexed (or was already known); 1 when some manifests
were skipped (each listed with its reason; the others were indexed), an incremental's base is
missing, or the storage could not be listed; 2 for a usage error (no such storage)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups import services
from backups.cli import dump_json, failed, usage_error
from backups.models import Storage


class Command(BaseCommand):
    requires_system_checks: list[str] = []
    help = (
        "Read every <backup>.manifest.json in a storage and create the Backup and BackupCopy rows "
        "the catalog lacks (after losing the application database). Never deletes anything. "
        "A manifest that cannot be trusted is skipped with its reason; the others are indexed. "
        "Exits 0 when everything was indexed, 1 when some manifests were skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--storage", required=True, metavar="NAME")
        parser.add_argument(
            "--dry-run", action="store_true", help="report what would be created; change nothing"
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        row = Storage.objects.filter(name=options["storage"]).first()
        if row is None:
            names = ", ".join(Storage.objects.values_list("name", flat=True)) or "none"
            raise usage_error(f"--storage: no storage named {options['storage']!r} (known: {names})")
        try:
            report = services.reindex_storage(row, dry_run=options["dry_run"])
        except services.StorageError as exc:
            raise failed(f"cannot read storage {row.name}: {exc}") from None
        if options["json"]:
            dump_json(self.stdout, {**report.__dict__, "complete": report.complete})
        else:
            verb = "would create" if report.dry_run else "created"
            self.stdout.write(
                f"storage {row.name}: {len(report.created)} {verb}, {report.known} already known, "
                f"{len(report.skipped)} skipped"
            )
            for line in report.targets_created:
                self.stdout.write(f"  target {line}: {verb}")
            for line in report.created:
                self.stdout.write(f"  {verb} {line}")
            for line in report.skipped:
                self.stdout.write(self.style.WARNING(f"  skipped: {line}"))
            for line in report.problems:
                self.stdout.write(self.style.WARNING(f"  problem: {line}"))
        if report.skipped:
            raise failed(f"{len(report.skipped)} manifest(s) skipped; everything else was indexed")
        if report.problems:
            raise failed(f"{len(report.problems)} backup(s) indexed without their base")
