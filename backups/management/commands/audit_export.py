"""manage.py audit_export --since 30d [--json]: the audit log from a moment on, oldest first."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from backups import services
from backups.cli import usage_error


class Command(BaseCommand):
    help = "Write the audit events since a moment, oldest first: a table, or JSON lines with --json."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            default="30d",
            metavar="WHEN",
            help="a duration before now (30d, 12h, 1y6mo) or an ISO date (2026-01-31); default 30d",
        )
        parser.add_argument("--json", action="store_true", help="one JSON object per line")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since = services.parse_audit_since(options["since"])
        except ValueError as exc:
            raise usage_error(f"--since: {exc}") from None
        events = services.audit_events_since(since).iterator()
        if options["json"]:
            for event in events:
                line = json.dumps(services.audit_event_dict(event), ensure_ascii=False, sort_keys=True)
                self.stdout.write(line)
            return
        self.stdout.write(
            f"{'TIME':<19}  {'USER':<20} {'METHOD':<6} {'ADDRESS':<15} {'ACTION':<19} {'OUTCOME':<7}  OBJECT"
        )
        for event in events:
            moment = timezone.localtime(event.created_at).strftime("%Y-%m-%d %H:%M:%S")
            self.stdout.write(
                f"{moment:<19}  {event.username or '-':<20} {event.auth_method or '-':<6} "
                f"{event.address or '-':<15} {event.action:<19} {event.outcome:<7}  {event.object_label or '-'}"
            )
