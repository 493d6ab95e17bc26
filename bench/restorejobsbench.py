"""Parallel PostgreSQL restores (``restore_jobs``) against the raw single-job pipeline.

    .venv/bin/python bench/restorejobsbench.py --no-write [--scales 50] [--tables 200]
        [--table-rows 25000] [--runs 3] [--warmup 1]

Data sets, in one throwaway PostgreSQL 15 server (``bench/servers.py``: the test suite's, fsync
off): ``pgbench -i -s N`` for each scale, and a many-table schema (``--tables`` tables of
``--table-rows`` rows, each with a primary key and two secondary indexes, so index builds are a
real part of the restore). Each data set is backed up once by ``backup_create`` (gzip, untimed);
every side restores that same archive:

    raw-1            gunzip -c STORED | pg_restore -d NEW                (the baseline)
    raw-j2           pg_restore -j 2 -d NEW ARCHIVE   (ARCHIVE decompressed beforehand, untimed)
    raw-gunzip-j2    gunzip -c STORED > ARCHIVE && pg_restore -j 2 -d NEW ARCHIVE
    ours-1           backup_restore into a new database, restore_jobs = 1 (streamed, one transaction)
    ours-j2, ours-j4 backup_restore into a new database, restore_jobs = 2 / 4 (spooled, pg_restore -j)
    ours-j2-zstd, ours-j4-zstd   the same from a zstd backup of the same data (decoding the
                     archive to the spool is serial work before pg_restore starts; zstd is the
                     codec that keeps it short)

NEW (``bench_restore``) is dropped before and after every run; the raw sides need it to exist, so
it is created just before their clock starts; ours creates it itself, inside its time (a parallel
restore only runs into a database it creates). After every restore each table's row count is
compared with the source (untimed). ``os.sync()`` runs before every side, so no side pays for the
previous one's dirty pages. Rounds are interleaved (every side once per round) and medians given.

The archive is the one our backup stored: pg_dump wrote it to a pipe, so its table of contents has
no data offsets, and every pg_restore -j worker finds its table's data by skipping over the blocks
before it (raw and ours alike).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import ROOT, BenchError, Ours, Sample, _check, manage_argv, run_child, run_pipeline
from servers import PG_BIN, RESTORE_DATABASE, Postgres, running, source_database, tool_version

KEY = "restore-jobs"
MIB = 1024 * 1024
GUNZIP = ["gunzip", "-c"]
JOBS = (2, 4)
DEFAULT_TABLES = 200
DEFAULT_TABLE_ROWS = 25_000
MANY_DATABASE = "bench_many"
SIDES = (
    "raw-1",
    "raw-j2",
    "raw-gunzip-j2",
    "ours-1",
    *(f"ours-j{jobs}" for jobs in JOBS),
    *(f"ours-j{jobs}-zstd" for jobs in JOBS),
)

# One table of the many-table schema: ~130 bytes a row, a primary key and two secondary indexes.
MANY_TABLES_SQL = """
DO $$
BEGIN
    FOR i IN 1..{tables} LOOP
        EXECUTE format('CREATE TABLE t%s (id bigint PRIMARY KEY, account int NOT NULL,
            created timestamptz NOT NULL, amount numeric(12, 2), note text)', i);
        EXECUTE format('INSERT INTO t%s SELECT g, (g * 7919) %% 100000,
            timestamptz ''2024-01-01'' + g * interval ''1 minute'', (g %% 100000) / 100.0,
            md5(g::text) || md5((g + %s)::text) FROM generate_series(1, %s) g', i, i, {rows});
        EXECUTE format('CREATE INDEX t%s_account ON t%s (account, created)', i, i);
        EXECUTE format('CREATE INDEX t%s_note ON t%s (note)', i, i);
    END LOOP;
END $$
"""


class Dataset:
    """A source database, the tables whose counts a restore must reproduce, and its archives."""

    def __init__(self, name: str, database: str, description: str) -> None:
        self.name, self.database, self.description = name, database, description
        self.tables: list[str] = []
        self.rows: dict[str, int] = {}
        self.record: dict[str, Any] = {}  # the gzip backup every gzip side restores
        self.record_zstd: dict[str, Any] = {}
        self.stored: Path = Path()
        self.archive: Path = Path()
        self.generate_seconds = 0.0


def _tables(flavour: Postgres, database: str) -> list[str]:
    rows = flavour.server.execute(
        database,
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
    return [str(row[0]) for row in rows]


def _counts(flavour: Postgres, database: str, tables: list[str]) -> dict[str, int]:
    return {
        table: int(flavour.server.execute(database, f"SELECT count(*) FROM {table}")[0][0])
        for table in tables
    }


def _generate(flavour: Postgres, scales: list[int], tables: int, table_rows: int) -> list[Dataset]:
    datasets = []
    for scale in scales:
        data = Dataset(f"pgbench-s{scale}", source_database(scale), f"pgbench -i -s {scale}")
        began = time.perf_counter()
        flavour.generate(data.database, scale)
        data.generate_seconds = time.perf_counter() - began
        datasets.append(data)
    if tables > 0:
        data = Dataset(
            f"{tables}-tables",
            MANY_DATABASE,
            f"{tables} tables of {table_rows} rows, each with a primary key and two secondary indexes",
        )
        began = time.perf_counter()
        flavour.server.create_database(MANY_DATABASE)
        flavour.server.execute(MANY_DATABASE, MANY_TABLES_SQL.format(tables=tables, rows=table_rows))
        flavour.server.execute(MANY_DATABASE, "VACUUM ANALYZE")
        data.generate_seconds = time.perf_counter() - began
        datasets.append(data)
    for data in datasets:
        data.tables = _tables(flavour, data.database)
        data.rows = _counts(flavour, data.database, data.tables)
    return datasets


def _targets(flavour: Postgres, datasets: list[Dataset]) -> list[str]:
    blocks = [flavour.target(f"src-{data.name}", data.database, "gzip", "keep") for data in datasets]
    blocks += [flavour.target(f"zsrc-{data.name}", data.database, "zstd", "keep") for data in datasets]
    for jobs in (1, *JOBS):
        blocks.append(
            flavour.target(f"restore-j{jobs}", RESTORE_DATABASE, "gzip", "bench", restore_jobs=jobs)
        )
    return blocks


def _stored_file(ours: Ours, target: str) -> Path:
    files = [p for p in (ours.keep / target).rglob("*") if p.is_file() and not p.name.endswith(".json")]
    if len(files) != 1:
        raise BenchError(f"expected one stored backup under {ours.keep / target}, found {files}")
    return files[0]


class Raw:
    """The raw tools on our stored archive, with the credentials in their environment."""

    def __init__(self, flavour: Postgres, work: Path, logs: Path) -> None:
        self.flavour, self.work, self.logs = flavour, work, logs
        work.mkdir(parents=True, exist_ok=True)

    def single(self, data: Dataset) -> Sample:
        log = self.logs / f"{KEY}-raw-1.stderr"
        with open(log, "wb") as err:
            gunzip, load, seconds = run_pipeline(
                [*GUNZIP, str(data.stored)],
                [str(PG_BIN / "pg_restore"), "-d", RESTORE_DATABASE],
                stdout=err,
                stderr=err,
                env=self.flavour.tool_env(),
            )
        _check(gunzip, log)
        _check(load, log)
        return Sample(
            "raw-1",
            seconds,
            max(gunzip.maxrss_kib, load.maxrss_kib),
            0,
            0,
            {"gunzip": gunzip, "pg_restore": load},
        )

    def parallel(self, data: Dataset, jobs: int, *, decompress: bool) -> Sample:
        label = f"raw-gunzip-j{jobs}" if decompress else f"raw-j{jobs}"
        log = self.logs / f"{KEY}-{label}.stderr"
        archive = self.work / "spool.dump" if decompress else data.archive
        processes = {}
        try:
            with open(log, "wb") as err:
                started = time.perf_counter()
                if decompress:
                    with open(archive, "wb") as out:
                        gunzip = run_child([*GUNZIP, str(data.stored)], stdout=out, stderr=err)
                    _check(gunzip, log)
                    processes["gunzip"] = gunzip
                argv = [str(PG_BIN / "pg_restore"), f"--jobs={jobs}", "-d", RESTORE_DATABASE, str(archive)]
                load = run_child(argv, stdout=err, stderr=err, env=self.flavour.tool_env())
                seconds = time.perf_counter() - started
            _check(load, log)
            processes["pg_restore"] = load
        finally:
            if decompress:
                archive.unlink(missing_ok=True)
        return Sample(label, seconds, max(p.maxrss_kib for p in processes.values()), 0, 0, processes)


def _version(tool: str) -> str:
    return tool_version([str(PG_BIN / tool), "--version"]).split("(PostgreSQL) ")[-1]


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(
    scales: list[int],
    runs: int,
    warmup: int,
    work: Path,
    logs: Path,
    *,
    tables: int = DEFAULT_TABLES,
    table_rows: int = DEFAULT_TABLE_ROWS,
) -> dict[str, Any]:
    """Measure every side on every data set; returns a JSON-ready dict (see ``save``)."""
    started = time.perf_counter()
    load = [_loadavg()]
    logs.mkdir(parents=True, exist_ok=True)
    with running("postgresql", work) as flavour:
        assert isinstance(flavour, Postgres)
        print(f"PostgreSQL server up on port {flavour.server.port}; generating ...", flush=True)
        datasets = _generate(flavour, scales, tables, table_rows)
        ours = Ours(work / f"home-{KEY}", logs, flavour.secret_env())
        ours.setup(_targets(flavour, datasets), probe=False)
        raw = Raw(flavour, work / f"raw-{KEY}", logs)
        result: dict[str, Any] = {
            "key": KEY,
            "versions": {
                **flavour.versions(),
                "pg_restore": _version("pg_restore"),
            },
            "runs": runs,
            "warmup": warmup,
            "sides": list(SIDES),
            "datasets": [],
        }
        try:
            for data in datasets:
                result["datasets"].append(_measure_dataset(flavour, ours, raw, data, runs, warmup))
        finally:
            for data in datasets:
                if data.archive.name:
                    data.archive.unlink(missing_ok=True)
        result["commands"] = _commands(flavour, ours)
    result["seconds"] = time.perf_counter() - started
    result["load"] = [*load, _loadavg()]
    return result


def _measure_dataset(
    flavour: Postgres, ours: Ours, raw: Raw, data: Dataset, runs: int, warmup: int
) -> dict[str, Any]:
    print(
        f"  {data.name}: {len(data.tables)} tables, {sum(data.rows.values())} rows; backing up ...",
        flush=True,
    )
    _, data.record = ours.backup(f"src-{data.name}")
    _, data.record_zstd = ours.backup(f"zsrc-{data.name}")
    data.stored = _stored_file(ours, f"src-{data.name}")
    data.archive = raw.work / f"{data.name}.dump"
    with open(data.archive, "wb") as out, open(raw.logs / f"{KEY}-prepare.stderr", "wb") as err:
        _check(
            run_child([*GUNZIP, str(data.stored)], stdout=out, stderr=err), raw.logs / f"{KEY}-prepare.stderr"
        )

    def restored(action: Callable[[], Sample], create: bool) -> Callable[[], Sample]:
        def run() -> Sample:
            flavour.drop_database(RESTORE_DATABASE)
            if create:
                flavour.server.create_database(RESTORE_DATABASE)
            os.sync()
            try:
                sample = action()
                found = _counts(flavour, RESTORE_DATABASE, data.tables)
                if found != data.rows:
                    wrong = [t for t in data.tables if found.get(t) != data.rows[t]]
                    raise BenchError(f"{sample.label} on {data.name}: wrong row counts in {wrong[:5]}")
                return sample
            finally:
                flavour.drop_database(RESTORE_DATABASE)

        return run

    actions: dict[str, Callable[[], Sample]] = {
        "raw-1": restored(lambda: raw.single(data), True),
        "raw-j2": restored(lambda: raw.parallel(data, 2, decompress=False), True),
        "raw-gunzip-j2": restored(lambda: raw.parallel(data, 2, decompress=True), True),
    }
    for jobs in (1, *JOBS):
        label = f"ours-{jobs}" if jobs == 1 else f"ours-j{jobs}"
        actions[label] = restored(
            functools.partial(ours.restore, data.record, f"restore-j{jobs}", label), False
        )
    for jobs in JOBS:
        label = f"ours-j{jobs}-zstd"
        actions[label] = restored(
            functools.partial(ours.restore, data.record_zstd, f"restore-j{jobs}", label), False
        )
    seconds: dict[str, list[float]] = {label: [] for label in actions}
    warm: dict[str, list[float]] = {label: [] for label in actions}
    peak: dict[str, int] = {label: 0 for label in actions}
    for round_ in range(warmup + runs):
        when = f"warm-up {round_ + 1}/{warmup}" if round_ < warmup else f"run {round_ - warmup + 1}/{runs}"
        for label, action in actions.items():
            sample = action()
            (warm if round_ < warmup else seconds)[label].append(sample.seconds)
            if round_ >= warmup:
                peak[label] = max(peak[label], sample.peak_rss_kib)
            print(f"  [{data.name}] {when:<12} {label:<14} {sample.seconds:7.2f}s", flush=True)
    return {
        "name": data.name,
        "description": data.description,
        "tables": len(data.tables),
        "rows": sum(data.rows.values()),
        "database_bytes": int(
            flavour.server.execute(data.database, "SELECT pg_database_size(current_database())")[0][0]
        ),
        "archive_bytes": data.record["raw_size"],
        "stored_bytes": data.record["file_size"],
        "stored_zstd_bytes": data.record_zstd["file_size"],
        "generate_seconds": data.generate_seconds,
        "seconds": seconds,
        "warmup_seconds": warm,
        "medians": {label: statistics.median(values) for label, values in seconds.items() if values},
        "peak_rss_kib": peak,
    }


def _commands(flavour: Postgres, ours: Ours) -> dict[str, str]:
    pg_restore = str(PG_BIN / "pg_restore")
    home = f"BACKUPSITE_HOME={ours.home.relative_to(ROOT)}"
    restore = shlex.join(manage_argv("backup_restore", "--id", "N", "--to", "restore-jN", "--yes", "--json"))
    return {
        "raw-1": f"gunzip -c STORED | {pg_restore} -d {RESTORE_DATABASE}",
        "raw-j2": f"{pg_restore} --jobs=2 -d {RESTORE_DATABASE} ARCHIVE",
        "raw-gunzip-j2": f"gunzip -c STORED > ARCHIVE && {pg_restore} --jobs=2 -d {RESTORE_DATABASE} ARCHIVE",
        "ours": f"{home} {restore}  # target restore-jN: options = {{ restore_jobs = N }}",
    }


def save(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    import report_restorejobs

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", default="50", help="pgbench scales, comma-separated ('' for none)")
    parser.add_argument(
        "--tables", type=int, default=DEFAULT_TABLES, help="many-table schema: tables (0: none)"
    )
    parser.add_argument("--table-rows", type=int, default=DEFAULT_TABLE_ROWS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only; RESULTS.md is left alone")
    args = parser.parse_args(argv)
    work = ROOT / "bench" / "work"
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    free = shutil.disk_usage(work.parent).free
    needed = (sum(scales) * 15 + args.tables * args.table_rows * 600 // MIB) * MIB  # archive, spool, server
    if free < needed:
        raise SystemExit(f"not enough disk: {free / MIB:.0f} MiB free, need ~{needed / MIB:.0f} MiB")
    try:
        result = measure(
            scales,
            args.runs,
            args.warmup,
            work,
            work / "logs",
            tables=args.tables,
            table_rows=args.table_rows,
        )
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    save(result, work / f"results-{KEY}.json")
    print()
    print(report_restorejobs.console_table(result))
    if not args.no_write:
        from report import machine_info

        command = "python bench/restorejobsbench.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        report_restorejobs.write_markdown(ROOT / "bench" / "RESULTS.md", result, machine_info(), command)
        print("\nwrote the restore-jobs block of bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
