"""manage.py backup_verify: re-read a stored backup and prove it is intact."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups import services
from backups.cli import MAX_ID, ProgressLine, dump_json, failed, usage_error, whole_number
from backups.models import Backup, Target


class Command(BaseCommand):
    # The run itself checks what it needs (tools, secrets, storages) and records any problem on
    # the row; the project-wide checks (`manage.py check`) only add start-up time here.
    requires_system_checks: list[str] = []
    help = "Verify a backup: size, SHA-256 and compression of every copy; --deep adds a trial restore."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--id", type=whole_number(1, MAX_ID), required=True, dest="backup_id")
        parser.add_argument("--deep", action="store_true", help="also run the engine's trial restore")
        parser.add_argument(
            "--sandbox",
            metavar="TARGET",
            help="with --deep: restore into a scratch database on this target (default: the target's sandbox)",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        backup = Backup.objects.select_related("target").filter(pk=options["backup_id"]).first()
        if backup is None:
            raise usage_error(f"--id: no backup with id {options['backup_id']}")
        sandbox = None
        if options["sandbox"]:
            if not options["deep"]:
                raise usage_error("--sandbox needs --deep")
            sandbox = Target.objects.filter(name=options["sandbox"]).first()
            if sandbox is None:
                raise usage_error(f"--sandbox: no target named {options['sandbox']!r}")
        line = ProgressLine(self.stdout, f"verify {backup.pk}", backup.file_size, enabled=not options["json"])
        try:
            outcome = services.verify_backup(backup, deep=options["deep"], sandbox=sandbox, progress=line)
        except services.ServiceError as exc:
            raise usage_error(str(exc)) from None
        line.done()
        if options["json"]:
            dump_json(
                self.stdout,
                {
                    "id": backup.pk,
                    "ok": outcome.ok,
                    "status": backup.status,
                    "verified": backup.verified,
                    "verified_at": backup.verified_at,
                    "messages": outcome.messages,
                },
            )
        else:
            style = self.style.SUCCESS if outcome.ok else self.style.ERROR
            verdict = "verified" if outcome.ok else "FAILED verification"
            self.stdout.write(style(f"backup {backup.pk} {verdict}"))
            for message in outcome.messages:
                self.stdout.write(f"  {message}")
        if not outcome.ok:
            raise failed(f"backup {backup.pk} failed verification")
