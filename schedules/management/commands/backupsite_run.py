"""manage.py backupsite_run: the whole site in one command (what `make run` serves)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups import services as backup_services
from backups.cli import EXIT_USAGE, whole_number
from backups.services import DEFAULT_QUEUE, WATCH_QUEUE, queue_problem
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


def queue_names(text: str) -> list[str]:
    """--queues: a comma-separated list of queue names (the watch's own queue refused: its
    worker is started anyway)."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name == WATCH_QUEUE:
            raise argparse.ArgumentTypeError(
                '"watch" has a worker of its own (started with the site); list only the queues of '
                'backups, e.g. "celery,eu-db"'
            )
        problem = queue_problem(name)
        if problem:
            raise argparse.ArgumentTypeError(f'{problem}; give a comma-separated list, e.g. "celery,eu-db"')
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise argparse.ArgumentTypeError(f"lists {', '.join(duplicates)} more than once")
    return names


def apply_site_config() -> str:
    """Apply BACKUPSITE_CONFIG (probes skipped: the sources may come up later) as
    ``start:backupsite_run``; the line saying what was applied, "" without a file. An invalid
    file stops the start (exit 2) listing its problems, the catalog unchanged."""
    path = settings.BACKUPSITE_CONFIG
    if not path:
        return ""
    by = "start:backupsite_run"
    try:
        config = backup_services.load_config(path)
        report = backup_services.apply_config(config, probe=False, applied_by=by)
    except backup_services.ConfigInvalid as exc:
        backup_services.record_audit(
            "config.apply",
            username=by,
            outcome="failure",
            details={"file": path, "problems": len(exc.errors)},
        )
        raise CommandError(
            f"BACKUPSITE_CONFIG {path}: {len(exc.errors)} problem(s), nothing applied, not started:\n  "
            + "\n  ".join(exc.errors),
            returncode=EXIT_USAGE,
        ) from None
    if report.changed:
        backup_services.record_audit(
            "config.apply", username=by, outcome="success", details={"file": path, **report.as_dict()}
        )
    return (
        f"Configuration applied: {config.path} (sha256 {config.digest[:12]}): {len(report.created)} "
        f"created, {len(report.updated)} updated, {len(report.deactivated)} deactivated."
    )


class Command(BaseCommand):
    help = (
        "Migrate, sync the schedules to beat, then run the web server, the Celery worker, the "
        "watch's own worker and one beat until Ctrl-C or SIGTERM (exit 0). Exits 1 when any of "
        "them stops on its own."
    )

    # The system checks run in handle(), after the configuration file is applied: run before it,
    # the drift check would warn about the very drift this start is about to apply.
    requires_system_checks: list[str] = []

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
            "--queues", type=queue_names, default=[DEFAULT_QUEUE], metavar="QUEUE,...",
            help="the queues the worker consumes (default celery): a target's queue brings its "
            "backups, verifications and restores to the workers that consume it",
        )  # fmt: skip
        parser.add_argument(
            "--stop-timeout", type=stop_seconds, default=30.0, metavar="SECONDS",
            help="how long a graceful stop may take before the children are killed (default 30)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1:
            raise CommandError("--concurrency: must be at least 1")
        call_command("migrate", interactive=False, verbosity=0)
        applied = apply_site_config()
        if applied:
            self.stdout.write(applied)
        self.check()
        counts = services.sync_all_periodic_tasks()
        self.stdout.write(f"Schedules synced to beat: {counts['synced']} (removed {counts['removed']}).")
        specs = site_children(
            base_dir=settings.BASE_DIR,
            home=settings.BACKUPSITE_HOME,
            bind=None if options["no_web"] else options["bind"],
            concurrency=options["concurrency"],
            node_name=f"backupsite-{os.getpid()}@%h",
            queues=options["queues"],
        )
        supervisor = Supervisor(
            specs, self.stdout, cwd=settings.BASE_DIR, stop_timeout=options["stop_timeout"]
        )
        try:
            supervisor.run()
        except SupervisorError as exc:
            raise CommandError(str(exc)) from None
        supervisor.say("all stopped")
