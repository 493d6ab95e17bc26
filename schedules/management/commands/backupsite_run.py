"""manage.py backupsite_run: the whole site in one command (what `make run` serves)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.cli import whole_number
from schedules import services
from schedules.supervisor import Supervisor, SupervisorError, site_children


def stop_seconds(text: str) -> float:
    """--stop-timeout: seconds, more than 0 and at most an hour (nan and inf refused)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be seconds from 0 to 3600, got {text[:30]!r}")
    return value


class Command(BaseCommand):
    help = (
        "Migrate, sync the schedules to beat, then run the web server, the Celery worker, the "
        "watch's own worker and one beat until Ctrl-C or SIGTERM (exit 0). Exits 1 when any of "
        "them stops on its own."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000", metavar="HOST:PORT", help="web address")
        parser.add_argument("--no-web", action="store_true", help="only the workers and beat")
        parser.add_argument(
            "--concurrency",
            type=whole_number(1, 64),
            default=2,
            help="backups the worker runs at once (default 2)",
        )
        parser.add_argument(
            "--stop-timeout", type=stop_seconds, default=30.0, metavar="SECONDS",
            help="how long a graceful stop may take before the children are killed (default 30)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1:
            raise CommandError("--concurrency: must be at least 1")
        call_command("migrate", interactive=False, verbosity=0)
        counts = services.sync_all_periodic_tasks()
        self.stdout.write(f"Schedules synced to beat: {counts['synced']} (removed {counts['removed']}).")
        specs = site_children(
            base_dir=settings.BASE_DIR,
            home=settings.BACKUPSITE_HOME,
            bind=None if options["no_web"] else options["bind"],
            concurrency=options["concurrency"],
            node_name=f"backupsite-{os.getpid()}@%h",
        )
        supervisor = Supervisor(
            specs, self.stdout, cwd=settings.BASE_DIR, stop_timeout=options["stop_timeout"]
        )
        try:
            supervisor.run()
        except SupervisorError as exc:
            raise CommandError(str(exc)) from None
        supervisor.say("all stopped")
