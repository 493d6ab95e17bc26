"""manage.py backup_watch: the watch beat runs every minute, runnable on its own (e.g. from the
system's cron) so a stopped beat cannot hide missed backups."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups.cli import dump_json
from schedules import services


class Command(BaseCommand):
    help = (
        "Reap backups whose worker died, send alerts whose sender stopped, alert on schedules whose due run has not succeeded "
        "within its grace period (once per outage) and on their recovery. Beat runs this every "
        "minute; run it from the system's cron too, so that a dead beat is noticed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        counts = services.watch()
        if options["json"]:
            dump_json(self.stdout, counts)
        else:
            self.stdout.write(
                f"lost runs reaped: {counts['lost']}, lost restores: {counts['lost_restores']}, "
                f"lost drills: {counts['lost_drills']}, "
                f"alerts sent late: {counts['alerts_resent']}, missed alerts: {counts['missed']}, "
                f"recoveries: {counts['recovered']}"
            )
