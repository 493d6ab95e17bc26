"""Benchmark: our backups and restores against the raw tools and django-dbbackup.

    .venv/bin/python bench/run.py
        [--engines sqlite,postgresql,mariadb,storages,retention,admin,encryption,schedules]
        [--sizes 100,1024] [--pg-scales 10,50] [--mariadb-scales 10,50] [--runs 3] [--warmup 1]
        [--no-dbbackup] [--storages local,s3,sftp,ftp,gcs,azure] [--storage-mib 1024]
        [--storage-warmup-mib 64] [--retention-sizes 10000,100000] [--retention-runs 7]
        [--admin-catalogs sqlite,postgresql] [--admin-runs 11] [--enc-sizes 1024] [--enc-pg-scales 50]
        [--restore-jobs-scales 50] [--quick] [--summary-only] [--no-write]

SQLite: wall time of ``manage.py backup_create`` (gzip and zstd targets) as a ratio to
``sqlite3 SRC ".backup TMP" && gzip -6 -c TMP > OUT``. PostgreSQL and MariaDB (pgbench data at
each scale, in a throwaway server): backup as a ratio to ``dump | gzip -6 > file``, restore as a
ratio to ``gunzip -c file | client NEW``, and django-dbbackup's ``dbbackup -z`` / ``dbrestore -z``
beside them. Storages (``storagebench.py``): upload throughput of a ``--storage-mib`` file to each
kind's loopback test server, ours as a ratio to the kind's plain client, and one fan-out into
local + s3 + sftp at once. Retention (``retentionbench.py``): in-process wall time and memory of
``backups.retention.planner.plan`` on ``--retention-sizes`` backups with a policy using every rule kind
(median of ``--retention-runs`` calls). Admin (``adminbench.py``): server time and SQL queries
of the dashboard and the backup list on a catalog of 1 000 targets and 1 000 000 backups, on
SQLite and PostgreSQL (generated once, cached under bench/work/admin/). Encryption
(``encryptionbench.py``): ``backup_create`` of gzip and zstd targets with and without age
encryption, on ``--enc-sizes`` SQLite databases and ``--enc-pg-scales`` pgbench databases, the
encrypted one as a ratio to its plain twin in the same run, each encrypted backup checked once
with Debian's ``age -d``. Schedules
(``schedulebench.py``, opt-in only): 200 schedules due in one minute run by 2 real Celery workers
over Redis, checked for none twice or lost, with each worker's RSS sampled. Restore jobs
(``restorejobsbench.py``, opt-in only): PostgreSQL restores with ``jobs = N`` against the raw
single-job pipeline. Medians of ``--runs`` interleaved runs; peak RSS of every process. Prints
tables, rewrites each engine's generated block of bench/RESULTS.md, saves each engine's raw
results in bench/work/results-ENGINE.json and rebuilds the side-by-side "Summary" block at the
top of bench/RESULTS.md from those files (``summary.py``; ``--summary-only`` does only that).
``--quick`` (``make bench QUICK=1``) runs a reduced set in a few minutes and writes
bench/work/QUICK.md (results in bench/work/quick/), never bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datagen
import report
from measure import ROOT, Baseline, BenchError, ChildRun, Ours, Sample, launch_floor, sqlite_target

BENCH = ROOT / "bench"
WORK = BENCH / "work"
RESULTS_MD = BENCH / "RESULTS.md"
MIB = 1024 * 1024
CACHE_BUDGET = 6 * 1024 * MIB  # cached databases kept under bench/work/data
ENGINES = ("sqlite", "postgresql", "mariadb", "storages", "retention", "admin", "encryption")
# Only when named in --engines: schedules takes ~3 min of mostly waiting; restore-jobs measures
# an option (pg_restore -j) rather than a default path.
OPT_IN_ENGINES = ("schedules", "restore-jobs")
STORAGE_KINDS = ("local", "s3", "sftp", "ftp", "gcs", "azure")
ADMIN_CATALOGS = ("sqlite", "postgresql")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
QUICK_DIR = WORK / "quick"  # --quick's results-*.json and meta-*.json: never the full run's
QUICK_MD = WORK / "QUICK.md"
NO_WRITE_DIR = WORK / "no-write"  # --no-write's results-*.json: kept apart from the full run's
# --quick's defaults (explicit flags still win): a smoke check of every side-by-side engine in a
# few minutes (README: "Quick run").
QUICK_DEFAULTS: dict[str, object] = {
    "engines": "sqlite,postgresql,storages,retention,encryption",
    "sizes": "100",
    "pg_scales": "10",
    "mariadb_scales": "2",
    "runs": 1,
    "warmup": 1,
    "storages": "local,s3",
    "storage_mib": 64,
    "storage_warmup_mib": 16,
    "retention_sizes": "10000",
    "retention_runs": 3,
    "admin_catalogs": "sqlite",
    "admin_runs": 3,
    "enc_sizes": "64",
    "enc_pg_scales": "2",
    "restore_jobs_scales": "2",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help=f"comma-separated, from {', '.join(ENGINES)}"
    )
    parser.add_argument("--sizes", default="100,1024", help="SQLite database sizes in MiB, comma-separated")
    parser.add_argument("--pg-scales", default="10,50", help="pgbench scale factors for PostgreSQL")
    parser.add_argument("--mariadb-scales", default="10,50", help="the same data set's scales for MariaDB")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per measurement")
    parser.add_argument("--no-dbbackup", action="store_true", help="skip django-dbbackup")
    parser.add_argument(
        "--storages",
        default=",".join(STORAGE_KINDS),
        help=f"storage kinds for the storages engine, comma-separated, from {', '.join(STORAGE_KINDS)}",
    )
    parser.add_argument("--storage-mib", type=int, default=1024, help="size of the uploaded file in MiB")
    parser.add_argument(
        "--storage-warmup-mib",
        type=int,
        default=64,
        help="size of the file the storage warm-up rounds upload",
    )
    parser.add_argument(
        "--retention-sizes",
        default="10000,100000",
        help="backup counts planned by the retention engine (1000000 takes ~45 s more)",
    )
    parser.add_argument(
        "--retention-runs", type=int, default=7, help="timed plan() calls per retention size (median)"
    )
    parser.add_argument(
        "--admin-catalogs",
        default=",".join(ADMIN_CATALOGS),
        help=f"catalogs the admin engine measures, comma-separated, from {', '.join(ADMIN_CATALOGS)}",
    )
    parser.add_argument("--admin-runs", type=int, default=11, help="timed rounds of the admin pages (median)")
    parser.add_argument(
        "--enc-sizes", default="1024", help="SQLite database sizes in MiB for the encryption engine"
    )
    parser.add_argument(
        "--enc-pg-scales", default="50", help="pgbench scale factors for the encryption engine"
    )
    parser.add_argument(
        "--schedule-sizes",
        default="200",
        help="targets due in the same minute for the schedules engine, one load each (e.g. 200,2000)",
    )
    parser.add_argument(
        "--restore-jobs-scales",
        default="50",
        help="pgbench scale factors for the restore-jobs engine (opt-in: --engines restore-jobs)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a reduced set for a smoke check (a few minutes); writes bench/work/QUICK.md, "
        "never bench/RESULTS.md",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="measure nothing: rebuild the Summary block of bench/RESULTS.md (with --quick: of "
        "bench/work/QUICK.md) from the saved results-*.json",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK_DEFAULTS)
    args = parser.parse_args(argv)
    args.results = QUICK_DIR if args.quick else WORK
    args.markdown = QUICK_MD if args.quick else RESULTS_MD
    args.command = shlex.join([".venv/bin/python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    args.engines = [part.strip() for part in args.engines.split(",") if part.strip()]
    known = ENGINES + OPT_IN_ENGINES
    unknown = sorted(set(args.engines) - set(known))
    if unknown or not args.engines:
        parser.error(
            f"--engines: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(known)}"
        )
    args.storages = [part.strip() for part in args.storages.split(",") if part.strip()]
    unknown = sorted(set(args.storages) - set(STORAGE_KINDS))
    if unknown or not args.storages:
        parser.error(
            f"--storages: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(STORAGE_KINDS)}"
        )
    args.storages = [kind for kind in STORAGE_KINDS if kind in args.storages]
    args.admin_catalogs = [part.strip() for part in args.admin_catalogs.split(",") if part.strip()]
    unknown = sorted(set(args.admin_catalogs) - set(ADMIN_CATALOGS))
    if unknown or not args.admin_catalogs:
        parser.error(
            f"--admin-catalogs: unknown {', '.join(unknown) or 'empty list'}; "
            f"choose from {', '.join(ADMIN_CATALOGS)}"
        )
    args.admin_catalogs = [kind for kind in ADMIN_CATALOGS if kind in args.admin_catalogs]
    if args.storage_mib < 1 or args.storage_warmup_mib < 1:
        parser.error("--storage-mib and --storage-warmup-mib must be >= 1")
    numbered = ("sizes", "pg_scales", "mariadb_scales", "retention_sizes", "enc_sizes", "enc_pg_scales")
    for option in (*numbered, "restore_jobs_scales", "schedule_sizes"):
        text = getattr(args, option)
        try:
            values = sorted({int(part) for part in text.split(",") if part.strip()})
        except ValueError:
            parser.error(
                f"--{option.replace('_', '-')}: expected comma-separated whole numbers, got {text!r}"
            )
        if not values or min(values) < 1:
            parser.error(f"--{option.replace('_', '-')}: give at least one value of 1 or more")
        setattr(args, option, values)
    if args.runs < 1 or args.warmup < 0 or args.retention_runs < 1 or args.admin_runs < 1:
        parser.error("--runs, --retention-runs and --admin-runs must be >= 1 and --warmup >= 0")
    return args


def check_tools(engines: list[str]) -> None:
    needed = {"sqlite": ["sqlite3", "gzip", "zstd"], "postgresql": ["gzip", "gunzip", "zstd", "cat"]}
    needed["mariadb"] = [*needed["postgresql"], "mariadb-dump", "mariadb", "mariadbd", "mariadb-install-db"]
    needed["storages"] = ["ssh-keygen"]  # sshd, moto, pyftpdlib, the emulators: tests/servers checks them
    needed["retention"] = []  # pure Python
    needed["schedules"] = ["redis-server"]
    needed["admin"] = []  # PostgreSQL's server programs: checked below
    needed["encryption"] = ["gzip", "zstd", "age", "age-keygen"]
    needed["restore-jobs"] = []  # PostgreSQL's programs: checked below
    missing = sorted({tool for key in engines for tool in needed[key] if shutil.which(tool) is None})
    if {"postgresql", "encryption", "restore-jobs"} & set(engines) and not (PG_BIN / "pg_dump").exists():
        missing.append(str(PG_BIN / "pg_dump"))
    if "admin" in engines and not (PG_BIN / "pg_ctl").exists():
        missing.append(str(PG_BIN / "pg_ctl"))
    if missing:
        raise BenchError(f"missing program(s): {', '.join(missing)} (make setup installs them)")


def check_disk(sizes: list[int]) -> None:
    """Need the databases, plus one snapshot and one output of the largest at a time."""
    free = shutil.disk_usage(WORK).free
    cached = sum(p.stat().st_size for p in (WORK / "data").glob("*.db")) if (WORK / "data").exists() else 0
    needed = sum(sizes) * MIB - cached + 2 * max(sizes) * MIB + 1024 * MIB
    if free < needed:
        raise BenchError(
            f"not enough disk: {free / MIB:.0f} MiB free under {WORK}, need ~{needed / MIB:.0f} MiB"
        )


def check_server_disk(scales: list[int]) -> None:
    """A throwaway server holds the source databases plus one restored copy (~16 MiB per scale unit)."""
    where = tempfile.gettempdir()
    free = shutil.disk_usage(where).free
    needed = (sum(scales) + max(scales)) * 16 * MIB + 1024 * MIB
    if free < needed:
        raise BenchError(
            f"not enough disk: {free / MIB:.0f} MiB free under {where}, need ~{needed / MIB:.0f} MiB"
        )


def generate(size: int) -> Path:
    """The cached database of ``size`` MiB; generated in a child so this process stays small
    (its RSS is the floor of every child's ru_maxrss)."""
    data = WORK / "data"
    database = datagen.database_path(data, size)
    if not datagen.is_cached(database, size):
        done = subprocess.run([sys.executable, str(BENCH / "datagen.py"), str(data), str(size)], check=False)
        if done.returncode != 0 or not datagen.is_cached(database, size):
            raise BenchError(f"generating the {size} MiB database failed")
    return database


def target_name(size: int, compression: str) -> str:
    return f"sqlite-{size}-{compression}"


def measure_size(
    size: int, database: Path, baseline: Baseline, ours: Ours, runs: int, warmup: int
) -> dict[str, list[Sample]]:
    actions: dict[str, Callable[[], Sample]] = {
        "baseline-gzip": lambda: baseline.run(database, "gzip"),
        "ours-gzip": lambda: ours.run(target_name(size, "gzip"), "ours-gzip"),
        "baseline-zstd": lambda: baseline.run(database, "zstd"),
        "ours-zstd": lambda: ours.run(target_name(size, "zstd"), "ours-zstd"),
    }
    for round_ in range(warmup):
        for action in actions.values():
            _show(size, f"warm-up {round_ + 1}/{warmup}", action())
    samples: dict[str, list[Sample]] = {label: [] for label in actions}
    for round_ in range(runs):  # interleaved, so drift on the machine hits every side alike
        for label, action in actions.items():
            sample = action()
            samples[label].append(sample)
            _show(size, f"run {round_ + 1}/{runs}", sample)
    return samples


def _show(size: int, when: str, sample: Sample) -> None:
    stored = sample.stored_bytes / sample.raw_bytes if sample.raw_bytes else 0
    print(
        f"  [{size} MiB] {when:<12} {sample.label:<14} {sample.seconds:7.2f}s  "
        f"peak RSS {sample.peak_rss_kib / 1024:6.1f} MiB  stored {stored:.1%}",
        flush=True,
    )


def save_raw(
    path: Path,
    results: dict[int, dict[str, list[Sample]]],
    startup: list[Sample],
    floor: ChildRun,
    databases: dict[int, Path],
) -> None:
    """The SQLite samples, the database sizes and the commands (summary.py reads them back)."""
    biggest = max(databases)
    payload = {
        "launch_floor": asdict(floor),
        "startup": [asdict(s) for s in startup],
        "database_bytes": {str(size): path.stat().st_size for size, path in databases.items()},
        "commands": report.commands(databases[biggest], target_name(biggest, "gzip")),
        "sizes": {
            str(size): {k: [asdict(s) for s in v] for k, v in by.items()} for size, by in results.items()
        },
    }
    path.write_text(json.dumps(payload, indent=2, default=str))


def publish(
    args: argparse.Namespace, key: str, result: Any, save: Any, report_module: Any, code_at_start: str
) -> None:
    """The common end of an engine whose report takes ``(path, result, machine, command)``: save
    the results and their metadata, print the console table, write the engine's block."""
    save(result, args.results / f"results-{key}.json")
    machine = machine_note(code_at_start)
    save_meta(args, key, machine)
    print()
    print(report_module.console_table(result))
    if not args.no_write:
        report_module.write_markdown(args.markdown, result, machine, args.command)
        print(f"\nwrote the {key} block of {args.markdown.relative_to(ROOT)}")


def save_meta(args: argparse.Namespace, key: str, machine: dict[str, str]) -> None:
    """What the summary needs beside an engine's results: when, which code and machine, and how
    (``meta-KEY.json`` next to ``results-KEY.json``)."""
    meta = {"machine": machine, "command": args.command, "runs": args.runs, "warmup": args.warmup}
    (args.results / f"meta-{key}.json").write_text(json.dumps(meta, indent=2))


def run_sqlite(args: argparse.Namespace, logs: Path, code_at_start: str) -> None:
    datagen.prune(WORK / "data", args.sizes, CACHE_BUDGET)
    check_disk(args.sizes)
    databases = {size: generate(size) for size in args.sizes}
    baseline, ours = Baseline(WORK / "baseline", logs), Ours(WORK / "home", logs)
    print("setting up a throwaway BACKUPSITE_HOME under bench/work/home ...", flush=True)
    ours.setup(
        [sqlite_target(target_name(s, c), db, c) for s, db in databases.items() for c in ("gzip", "zstd")]
    )
    floor = launch_floor()
    startup = [ours.startup() for _ in range(args.runs + 1)][1:]
    results: dict[int, dict[str, list[Sample]]] = {}
    for size, database in databases.items():
        print(f"measuring {size} MiB ({args.warmup} warm-up + {args.runs} runs each) ...", flush=True)
        results[size] = measure_size(size, database, baseline, ours, args.runs, args.warmup)
    save_raw(args.results / "results-sqlite.json", results, startup, floor, databases)
    summary = report.summarise(results, startup, floor, databases, args.runs, args.warmup, code_at_start)
    save_meta(args, "sqlite", {**summary.machine, "launch floor": f"{floor.maxrss_kib / 1024:.1f} MiB"})
    print()
    print(report.console_table(summary))
    if not args.no_write:
        report.write_markdown(args.markdown, summary)
        print(f"\nwrote the SQLite block of {args.markdown.relative_to(ROOT)}")


def run_server(key: str, args: argparse.Namespace, logs: Path, code_at_start: str) -> None:
    # Imported here: the server helpers load database drivers, which would raise this process's
    # RSS (the floor of every child's ru_maxrss) during the SQLite part.
    import report_servers
    from dbbackup_runner import DbBackup
    from serverbench import measure_engine

    dbbackup = None if args.no_dbbackup else DbBackup(WORK, logs)
    versions = {}
    if dbbackup is not None:
        versions["django-dbbackup"] = dbbackup.ensure()
    scales = args.pg_scales if key == "postgresql" else args.mariadb_scales
    check_server_disk(scales)
    result = measure_engine(key, scales, args.runs, args.warmup, WORK, logs, dbbackup, not args.quick)
    result.versions.update(versions)
    result.versions["launch floor (ru_maxrss of `true`)"] = f"{launch_floor().maxrss_kib / 1024:.1f} MiB"
    (args.results / f"results-{key}.json").write_text(json.dumps(asdict(result), indent=2, default=str))
    machine = report.machine_info()
    if not report.same_code(code_at_start, machine["code"]):
        machine["code"] = f"{code_at_start}, CHANGED DURING THE RUN to {machine['code']}"
    else:
        machine["code"] = code_at_start
    save_meta(args, key, machine)
    print()
    print(report_servers.console_table(result))
    if not args.no_write:
        report_servers.write_markdown(args.markdown, result, machine, args.runs, args.warmup)
        print(f"\nwrote the {result.title} block of {args.markdown.relative_to(ROOT)}")


def run_storages(args: argparse.Namespace, logs: Path, code_at_start: str) -> None:
    # Imported here, and storagebench itself imports no client library in this process: every
    # child's ru_maxrss starts from this process's pages (the SDKs load only in the children).
    import report_storages
    import storagebench

    work = WORK / "storages"
    free = shutil.disk_usage(WORK).free
    needed = 4 * args.storage_mib * MIB + 1024 * MIB  # the source; the fan-out: local, sftp, moto spool
    if free < needed:
        raise BenchError(
            f"not enough disk: {free / MIB:.0f} MiB free under {WORK}, need ~{needed / MIB:.0f} MiB"
        )
    try:
        result = storagebench.measure(
            args.storages, args.storage_mib, args.runs, args.warmup, work, logs, args.storage_warmup_mib
        )
    except storagebench.StorageBenchError as exc:
        raise BenchError(str(exc)) from None
    storagebench.save(result, args.results / "results-storages.json")
    machine = machine_note(code_at_start)
    save_meta(args, "storages", machine)
    print()
    print(report_storages.console_table(result))
    if not args.no_write:
        report_storages.write_markdown(args.markdown, result, machine, args.runs, args.warmup)
        print(f"\nwrote the storages block of {args.markdown.relative_to(ROOT)}")


def machine_note(code_at_start: str) -> dict[str, str]:
    """The machine facts for a results block, flagging code that changed while the bench ran."""
    machine = report.machine_info()
    if not report.same_code(code_at_start, machine["code"]):
        machine["code"] = f"{code_at_start}, CHANGED DURING THE RUN to {machine['code']}"
    else:
        machine["code"] = code_at_start
    machine["launch floor"] = f"{launch_floor().maxrss_kib / 1024:.1f} MiB"
    return machine


def run_retention(args: argparse.Namespace, logs: Path, code_at_start: str) -> None:
    # Imported here, like the other engines; the planning itself runs in one child per size.
    import report_retention
    import retentionbench

    try:
        result = retentionbench.measure(args.retention_sizes, args.retention_runs, args.warmup, logs)
    except retentionbench.RetentionBenchError as exc:
        raise BenchError(str(exc)) from None
    publish(args, "retention", result, retentionbench.save, report_retention, code_at_start)


def run_schedules(args: argparse.Namespace, logs: Path, code_at_start: str) -> None:
    # Imported here, like the other engines; the workers and beat are child processes.
    import report_schedules
    import schedulebench

    try:
        result = schedulebench.measure_sizes(WORK / "schedules", logs, args.schedule_sizes)
    except (schedulebench.ScheduleBenchError, RuntimeError) as exc:
        raise BenchError(str(exc)) from None
    publish(args, "schedules", result, schedulebench.save, report_schedules, code_at_start)


def run_admin(args: argparse.Namespace, logs: Path, code_at_start: str) -> None:
    # Imported here, like the other engines; generation and measurement run in children.
    import adminbench
    import report_admin

    work = WORK / "admin"
    free = shutil.disk_usage(WORK).free
    needed = sum(adminbench.CATALOG_MIB[kind] for kind in args.admin_catalogs) * MIB
    if free < needed and any(adminbench.stale(work / kind) for kind in args.admin_catalogs):
        raise BenchError(
            f"not enough disk: {free / MIB:.0f} MiB free under {WORK}, need ~{needed / MIB:.0f} MiB"
        )
    try:
        result = adminbench.measure(args.admin_catalogs, args.admin_runs, args.warmup, work, logs)
    except adminbench.AdminBenchError as exc:
        raise BenchError(str(exc)) from None
    publish(args, "admin", result, adminbench.save, report_admin, code_at_start)


def run_encryption(args: argparse.Namespace, logs: Path, code_at_start: str) -> None:
    # Imported here, like the other engines; the PostgreSQL helpers load psycopg only after the
    # SQLite sources are measured, so this process stays small (every child's ru_maxrss floor).
    import encryptionbench
    import report_encryption

    datagen.prune(WORK / "data", args.enc_sizes, CACHE_BUDGET)
    check_disk(args.enc_sizes)
    check_server_disk(args.enc_pg_scales)
    databases = {size: generate(size) for size in args.enc_sizes}
    result = encryptionbench.measure(
        databases, args.enc_pg_scales, args.runs, args.warmup, WORK / "encryption", logs
    )
    publish(args, "encryption", result, encryptionbench.save, report_encryption, code_at_start)


def run_restore_jobs(args: argparse.Namespace, logs: Path, code_at_start: str) -> None:
    # Imported here, like the other engines (restorejobsbench.py measures, report_restorejobs.py
    # reports); the servers and tools run in children.
    try:
        import report_restorejobs
        import restorejobsbench
    except ModuleNotFoundError as exc:
        raise BenchError(f"the restore-jobs engine needs bench/{exc.name}.py, which is missing") from None

    check_server_disk(args.restore_jobs_scales)
    result = restorejobsbench.measure(
        args.restore_jobs_scales, args.runs, args.warmup, WORK / "restore-jobs", logs
    )
    publish(args, "restore-jobs", result, restorejobsbench.save, report_restorejobs, code_at_start)


def write_summary(args: argparse.Namespace) -> None:
    """Rebuild the side-by-side Summary block from every saved results-*.json and print it."""
    import summary  # imports every engine's report module: only once the measuring is done

    block = summary.build(args.results)
    print()
    print(block)
    if not args.no_write:
        summary.write(args.markdown, block)
        print(f"\nwrote the Summary block of {args.markdown.relative_to(ROOT)}")


QUICK_HEADER = """# Quick benchmark (smoke check)

Produced by `make bench QUICK=1` (`bench/run.py --quick`): a reduced set (small sizes, one warm-up
and one timed round) to check that every side still runs and to see rough ratios. Not the numbers
of record: those are in bench/RESULTS.md, from a full `make bench` on an idle machine.
"""


def compile_app() -> None:
    """Byte-compile the application first, as an installed deployment is: with
    PYTHONDONTWRITEBYTECODE set (as on this machine) or a read-only tree, every changed module
    would otherwise be compiled from source again in every timed run."""
    paths = [str(ROOT / path) for path in report.APP_PATHS]
    result = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *paths], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise BenchError(f"compileall failed: {result.stdout}{result.stderr}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        args.results.mkdir(exist_ok=True)
        write_summary(args)
        return 0
    if args.no_write and not args.quick:
        # A print-only run must not replace the results the Summary of RESULTS.md is built from.
        args.results = NO_WRITE_DIR
    if args.quick:  # a fresh quick report: only this run's results, never a stale engine's
        shutil.rmtree(QUICK_DIR, ignore_errors=True)
        if not args.no_write:
            QUICK_MD.write_text(QUICK_HEADER)
    args.results.mkdir(exist_ok=True)
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    code_at_start = report.code_version()
    try:
        check_tools(args.engines)
        compile_app()
        for key in ENGINES + OPT_IN_ENGINES:
            if key not in args.engines:
                continue
            if key == "sqlite":
                run_sqlite(args, logs, code_at_start)
            elif key == "storages":
                run_storages(args, logs, code_at_start)
            elif key == "retention":
                run_retention(args, logs, code_at_start)
            elif key == "admin":
                run_admin(args, logs, code_at_start)
            elif key == "schedules":
                run_schedules(args, logs, code_at_start)
            elif key == "encryption":
                run_encryption(args, logs, code_at_start)
            elif key == "restore-jobs":
                run_restore_jobs(args, logs, code_at_start)
            else:
                run_server(key, args, logs, code_at_start)
        write_summary(args)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print(f"\nbench ran for {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
