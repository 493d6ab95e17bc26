"""The catalog the admin benchmark reads: 1 000 targets, their schedules and 1 000 000 backup
rows with their stored copies, generated from a fixed seed and bulk-loaded (``executemany`` on
SQLite, ``COPY`` on PostgreSQL), in chunks, in ``id`` order: both catalogs get the same rows, dated
from the moment each is generated.

    DATABASE_URL=... BACKUPSITE_HOME=... .venv/bin/python bench/admindata.py
        (run by adminbench.py as a child; prints one JSON object: counts and timings)

The shape, meant to look like a catalog two years old:

- 4 storages; 1 000 targets of 7 engines, 95 % active, each with 1 storage (10 % with 2);
  90 % carry a retention policy, whose effect is simulated: their successes older than 35 days
  have their files deleted (``deleted_at`` set, copies ``deleted``) except the first of each
  month for a year. The other 10 % keep everything (about 18 % of all copies stay stored).
- 80 % of the targets have a schedule, 10 % a second one; 5 % of schedules are paused and 2 % of
  the active ones have missed their last slot.
- Backups: 60 % of the targets run for the whole two years, the others started at a random
  moment since; 1 % never ran. Cadences of 4 h, 12 h, 1 day and 1 week, scaled so the total is
  exactly ``BACKUPS``. About 90 % success, 6 % failed, 3.8 % skipped, 0.2 % corrupt; 3 % of the
  targets fail every run of their last day; 5 targets have a backup running now and 2 a pending
  one. Rows are interleaved in time across targets, as a real catalog's are.
- One copy per storage of every success and corrupt run (about 1 000 000 copy rows).

Timestamps are relative to the moment of generation (the dashboard counts the last 24 h and 30
days from now); adminbench.py regenerates a catalog older than ``MAX_AGE_DAYS``.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VERSION = 3  # bump when the generated data changes: cached catalogs are then regenerated
TARGETS = 1000
BACKUPS = 1_000_000
SPAN = timedelta(days=730)
SEED = 16
CHUNK = 20_000  # rows per executemany / COPY
MAX_AGE_DAYS = 14
STORAGES = (("local", "local"), ("offsite-s3", "s3"), ("dr-sftp", "sftp"), ("archive-azure", "azure"))
ENGINES = (
    ("postgresql", 40), ("mysql", 15), ("mariadb", 10), ("sqlite", 10), ("files", 17), ("redis", 5),
    ("mongodb", 3),
)  # fmt: skip
CADENCES = (
    (timedelta(hours=4), 2),
    (timedelta(hours=12), 18),
    (timedelta(days=1), 72),
    (timedelta(days=7), 8),
)
STATUSES = (("success", 900), ("failed", 60), ("skipped", 38), ("corrupt", 2))
RUNNING, PENDING = 5, 2
SUPERUSER = "bench-admin"


@dataclass
class Plan:
    """One target's generated facts."""

    pk: int
    name: str
    engine: str
    storages: list[int]
    retention: bool
    schedule: int | None  # the first schedule's id
    first: datetime | None  # first run; None: never ran
    count: int  # backup rows
    base_size: int
    failing: bool  # every run of its last day failed


def weighted(rng: random.Random, choices: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([value for value, _ in choices], weights=[weight for _, weight in choices])[0]


def plan_targets(now: datetime) -> tuple[list[Plan], list[dict[str, Any]]]:
    rng = random.Random(SEED)
    plans: list[Plan] = []
    schedules: list[dict[str, Any]] = []
    raw_counts: list[float] = []
    for pk in range(1, TARGETS + 1):
        engine = weighted(rng, ENGINES)
        storages = [rng.randrange(len(STORAGES)) + 1]
        if rng.random() < 0.10:
            storages.append(storages[0] % len(STORAGES) + 1)
        never = rng.random() < 0.01
        first = None if never else now - (SPAN if rng.random() < 0.6 else SPAN * rng.random())
        cadence = weighted(rng, CADENCES)
        raw_counts.append(0.0 if first is None else (now - first) / cadence)
        name = f"{engine}-{pk:04d}"
        schedule = None
        for number in range(2 if rng.random() < 0.10 else 1 if rng.random() < 0.8 else 0):
            active = rng.random() >= 0.05
            schedules.append(
                {
                    "id": len(schedules) + 1,
                    "name": f"{name}-{'nightly' if number == 0 else 'weekly'}",
                    "target_id": pk,
                    "cron_expression": f"{rng.randrange(60)} {rng.randrange(24)} * * *",
                    "is_active": active,
                    "next_run_at": now + timedelta(minutes=rng.randrange(1, 1440)) if active else None,
                    "last_run_at": now - timedelta(minutes=rng.randrange(1, 1440)),
                    "missed_since": now - timedelta(hours=rng.randrange(1, 20))
                    if active and rng.random() < 0.02
                    else None,
                    "created_at": (first or now) - timedelta(days=1),
                    "updated_at": now - timedelta(days=1),
                }
            )
            schedule = schedule or len(schedules)
        plans.append(
            Plan(
                pk=pk,
                name=name,
                engine=engine,
                storages=storages,
                retention=rng.random() < 0.9,
                schedule=schedule,
                first=first,
                count=0,
                base_size=int(2 ** rng.uniform(20, 34)),  # 1 MiB .. 16 GiB
                failing=rng.random() < 0.03,
            )
        )
    # Scale the cadences so the total is exactly BACKUPS.
    scale = BACKUPS / sum(raw_counts)
    counts = [int(raw * scale) for raw in raw_counts]
    for index in sorted(range(TARGETS), key=lambda i: -raw_counts[i])[: BACKUPS - sum(counts)]:
        counts[index] += 1
    for plan, count in zip(plans, counts, strict=True):
        plan.count = count
    return plans, schedules


def target_runs(plan: Plan, now: datetime, running: bool, pending: bool) -> Iterator[tuple[Any, ...]]:
    """One target's runs in time order: (started_at, target pk, fields without id)."""
    if plan.first is None or plan.count == 0:
        return
    rng = random.Random(SEED * 100_003 + plan.pk)
    step = (now - timedelta(minutes=10) - plan.first) / plan.count
    kept_months: set[tuple[int, int]] = set()
    for k in range(plan.count):
        started = plan.first + step * k + timedelta(seconds=rng.randrange(120))
        last = k == plan.count - 1
        age = now - started
        if last and running:
            status = "running"
        elif last and pending:
            status = "pending"
        elif plan.failing and age < timedelta(days=1):
            status = "failed"
        else:
            status = weighted(rng, STATUSES)
        yield started, plan.pk, run_fields(plan, rng, started, age, status, kept_months)


def run_fields(
    plan: Plan,
    rng: random.Random,
    started: datetime,
    age: timedelta,
    status: str,
    kept_months: set[tuple[int, int]],
) -> dict[str, Any]:
    stored = status in ("success", "corrupt")
    growth = 1 + (SPAN - age) / SPAN  # sources grow over time
    size = int(plan.base_size * growth * rng.uniform(0.95, 1.05)) if stored else None
    seconds = 2 + (size or 0) / 40_000_000 if status != "skipped" else 0.4
    finished = status not in ("running", "pending")
    completed = started + timedelta(seconds=seconds) if finished else None
    deleted = None
    if stored and plan.retention and age > timedelta(days=35):
        month = (started.year, started.month)
        if age > timedelta(days=365) or month in kept_months:
            deleted = started + timedelta(days=35)
        kept_months.add(month)
    verified = status == "success" and rng.random() < 1 / 30
    name = f"{plan.name}-{started:%Y%m%d-%H%M%S}"
    database = plan.engine != "files"
    return {
        "target_id": plan.pk,
        "schedule_id": plan.schedule if plan.schedule and rng.random() < 0.95 else None,
        "backup_type": "database" if database else "files",
        "backup_name": name,
        "file_path": f"{plan.name}/{started:%Y/%m/%d}/{name}.{'sql' if database else 'tar'}.gz"
        if stored
        else "",
        "file_size": size,
        "raw_size": size * 3 if size else None,
        "checksum": f"{rng.getrandbits(256):064x}" if stored else "",
        "status": status,
        "started_at": started,
        "completed_at": completed,
        "duration_seconds": seconds if finished else None,
        "engine_info": json.dumps(
            {
                "server_version": "15.4",
                "tool": f"{plan.engine}-dump 15.4",
                "row_counts": {f"public.table_{n}": rng.randrange(10**6) for n in range(6)},
                "row_counts_exact": True,
            }
        )
        if stored
        else "{}",
        "compression": "zstd" if plan.pk % 3 == 0 else "gzip",
        "verified": verified,
        "verified_at": completed + timedelta(hours=1) if verified and completed else None,
        "initiated_by": "schedule" if plan.schedule else "admin",
        "error_message": (
            f'{plan.engine}: error: connection to server at "db-{plan.pk}.internal" (10.0.{plan.pk % 250}.7), '
            "port 5432 failed: Connection refused\n\tIs the server running on that host and accepting "
            "TCP/IP connections?"
        )
        if status == "failed"
        else "",
        "progress": (size or 0) * 3 if finished else rng.randrange(10**8),
        "worker": f"worker-{plan.pk % 4}:{1000 + plan.pk}",
        "heartbeat_at": completed or started + timedelta(seconds=30),
        "deleted_at": deleted,
        "created_at": started - timedelta(milliseconds=400),
    }


def all_runs(plans: list[Plan], now: datetime) -> Iterator[tuple[Any, ...]]:
    """Every run of every target, merged in time order (ids follow time, as in a real catalog)."""
    rng = random.Random(SEED + 1)
    active = [plan for plan in plans if plan.count > 1 and not plan.failing]
    chosen = rng.sample(active, RUNNING + PENDING)
    running = {plan.pk for plan in chosen[:RUNNING]}
    pending = {plan.pk for plan in chosen[RUNNING:]}
    streams = [target_runs(plan, now, plan.pk in running, plan.pk in pending) for plan in plans]
    return heapq.merge(*streams, key=lambda run: (run[0], run[1]))


class Table:
    """A table's columns in the order loaded: the given ones, then every other concrete column
    with its model default (so a new column with a default needs no change here)."""

    def __init__(self, model: Any, given: list[str], sqlite: bool) -> None:
        from django.db.models import NOT_PROVIDED

        self.name = model._meta.db_table
        fields = {field.attname: field for field in model._meta.concrete_fields}
        unknown = [name for name in given if name not in fields and name != "id"]
        if unknown:
            raise SystemExit(f"{self.name}: no column(s) {unknown}")
        self.given = given
        self.defaults: list[Any] = []
        self.columns = [fields[name].column if name != "id" else "id" for name in given]
        for name, field in fields.items():
            if name in given or name == "id":
                continue
            if field.has_default():
                value = field.get_default()
                value = json.dumps(value) if isinstance(value, dict | list) else value
            elif field.null:
                value = None
            elif field.default is NOT_PROVIDED and field.blank:
                value = ""
            else:
                raise SystemExit(f"{self.name}.{field.column}: no default; give it in admindata.py")
            self.columns.append(field.column)
            self.defaults.append(value)
        self.sqlite = sqlite

    def row(self, values: dict[str, Any]) -> tuple[Any, ...]:
        given = [values[name] for name in self.given]
        if self.sqlite:  # Django's SQLite format: naive UTC text; JSON as text
            given = [
                str(value.astimezone(UTC).replace(tzinfo=None)) if isinstance(value, datetime) else value
                for value in given
            ]
        return (*given, *self.defaults)


class Loader:
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.sqlite = connection.vendor == "sqlite"

    def load(self, table: Table, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        columns = ", ".join(f'"{column}"' for column in table.columns)
        if self.sqlite:
            marks = ", ".join("?" for _ in table.columns)
            self.connection.connection.executemany(
                f'INSERT INTO "{table.name}" ({columns}) VALUES ({marks})', rows
            )
            return
        with (
            self.connection.connection.cursor() as cursor,
            cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy,
        ):
            for row in rows:
                copy.write_row(row)


def generate(now: datetime) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection, transaction

    from backups.models import Backup, BackupCopy, Storage, Target
    from schedules.models import BackupSchedule

    clock = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    migrated = time.perf_counter() - clock
    if Backup.objects.exists() or Target.objects.exists():
        raise SystemExit("the catalog is not empty: adminbench.py generates only into a new one")
    sqlite = connection.vendor == "sqlite"
    if sqlite:  # a bulk load: no journal, no syncs, a large page cache (WAL again at the end)
        connection.ensure_connection()
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -1000000"):
            connection.connection.execute(f"PRAGMA {pragma}")
    loader = Loader(connection)
    plans, schedules = plan_targets(now)
    counts: dict[str, int] = {}
    clock = time.perf_counter()
    with transaction.atomic():
        storage_table = Table(Storage, ["id", "name", "kind", "options", "created_at", "updated_at"], sqlite)
        loader.load(
            storage_table,
            [
                storage_table.row(
                    {
                        "id": pk,
                        "name": name,
                        "kind": kind,
                        "options": json.dumps({"path": f"/srv/backups/{name}"} if kind == "local" else {}),
                        "created_at": now - SPAN,
                        "updated_at": now - SPAN,
                    }
                )
                for pk, (name, kind) in enumerate(STORAGES, 1)
            ],
        )
        target_table = Table(
            Target,
            ["id", "name", "engine", "host", "port", "database", "user", "password", "retention",
             "is_active", "created_at", "updated_at"],
            sqlite,
        )  # fmt: skip
        loader.load(
            target_table,
            [
                target_table.row(
                    {
                        "id": plan.pk,
                        "name": plan.name,
                        "engine": plan.engine,
                        "host": "" if plan.engine in ("sqlite", "files") else f"db-{plan.pk}.internal",
                        "port": None if plan.engine in ("sqlite", "files") else 5432,
                        "database": f"/srv/data/{plan.name}" if plan.engine == "sqlite" else "app",
                        "user": "backup",
                        "password": "${DB_PASSWORD}",
                        "retention": json.dumps(
                            {"keep_daily": 35, "keep_monthly": 12} if plan.retention else {}
                        ),
                        "is_active": plan.pk % 20 != 7,
                        "created_at": (plan.first or now) - timedelta(days=1),
                        "updated_at": now - timedelta(days=2),
                    }
                )
                for plan in plans
            ],
        )
        links = Table(Target.storages.through, ["id", "target_id", "storage_id"], sqlite)
        pairs = [(plan.pk, storage) for plan in plans for storage in plan.storages]
        loader.load(
            links,
            [links.row({"id": n, "target_id": t, "storage_id": s}) for n, (t, s) in enumerate(pairs, 1)],
        )
        schedule_table = Table(BackupSchedule, list(schedules[0]), sqlite)
        loader.load(schedule_table, [schedule_table.row(values) for values in schedules])
        counts.update(storages=len(STORAGES), targets=len(plans), schedules=len(schedules))
        backup_table = Table(Backup, ["id", *run_fields_names()], sqlite)
        copy_table = Table(
            BackupCopy, ["id", "backup_id", "target_id", "storage_id", "path", "size", "etag", "status",
                         "created_at", "deleted_at"], sqlite,
        )  # fmt: skip
        storages_of = {plan.pk: plan.storages for plan in plans}
        backups: list[tuple[Any, ...]] = []
        copies: list[tuple[Any, ...]] = []
        statuses: dict[str, int] = {}
        copy_statuses: dict[str, int] = {}
        next_copy = 1
        for pk, (_, target_pk, fields) in enumerate(all_runs(plans, now), 1):
            fields["id"] = pk
            backups.append(backup_table.row(fields))
            statuses[fields["status"]] = statuses.get(fields["status"], 0) + 1
            if fields["file_path"]:
                for storage in storages_of[target_pk]:
                    status = "deleted" if fields["deleted_at"] else "stored"
                    copies.append(
                        copy_table.row(
                            {
                                "id": next_copy,
                                "backup_id": pk,
                                "target_id": target_pk,
                                "storage_id": storage,
                                "path": fields["file_path"],
                                "size": fields["file_size"],
                                "etag": fields["checksum"][:32],
                                "status": status,
                                "created_at": fields["completed_at"],
                                "deleted_at": fields["deleted_at"],
                            }
                        )
                    )
                    copy_statuses[status] = copy_statuses.get(status, 0) + 1
                    next_copy += 1
            if len(backups) >= CHUNK:
                loader.load(backup_table, backups)
                loader.load(copy_table, copies)
                backups, copies = [], []
                print(
                    f"    {pk:>9,} backup rows loaded ({time.perf_counter() - clock:.0f} s)",
                    flush=True,
                    file=sys.stderr,
                )
        loader.load(backup_table, backups)
        loader.load(copy_table, copies)
        counts.update(backups=sum(statuses.values()), copies=next_copy - 1)
        User.objects.filter(username=SUPERUSER).delete()
        user = User(username=SUPERUSER, is_staff=True, is_superuser=True)
        user.set_unusable_password()
        user.save()
    loaded = time.perf_counter() - clock
    clock = time.perf_counter()
    all_visible: dict[str, float] = {}
    with connection.cursor() as cursor:
        if sqlite:
            cursor.execute("PRAGMA journal_mode = WAL")
        else:
            for model in (Storage, Target, Target.storages.through, BackupSchedule, Backup, BackupCopy):
                table = model._meta.db_table
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), (SELECT max(id) FROM \"{table}\"))"
                )
            # What autovacuum would have done by now (the test servers run it off): statistics
            # for the planner, the visibility map for index-only scans. Twice: here the first
            # database-wide pass left backups_backupcopy's visibility map empty (relallvisible
            # 0, so no index-only scan on it), which a real catalog's autovacuum would not.
            cursor.execute("VACUUM ANALYZE")
            cursor.execute("VACUUM")
            tables = [model._meta.db_table for model in (Backup, BackupCopy)]
            cursor.execute(
                "SELECT relname, relallvisible::float / greatest(relpages, 1) FROM pg_class WHERE relname = ANY(%s)",
                [tables],
            )
            all_visible = {name: round(fraction, 3) for name, fraction in cursor.fetchall()}
    finished = time.perf_counter() - clock
    return {
        "version": VERSION,
        "generated_at": now.isoformat(),
        "counts": counts,
        "statuses": statuses,
        "copy_statuses": copy_statuses,
        "seconds": {"migrate": migrated, "load": loaded, "finish": finished},
        "all_visible": all_visible,  # PostgreSQL: the share of pages VACUUM marked all-visible
    }


def run_fields_names() -> list[str]:
    """The Backup columns run_fields() gives, in its order."""
    plan = Plan(1, "x", "sqlite", [1], False, None, datetime.now(UTC), 1, 1, False)
    return list(run_fields(plan, random.Random(0), datetime.now(UTC), timedelta(0), "success", set()))


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")
    import django

    django.setup()
    now = datetime.now(UTC).replace(microsecond=0)
    print(json.dumps(generate(now)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
