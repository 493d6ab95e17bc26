"""Benchmark: back up SQLite databases with ``backup_create`` and compare with the raw tools.

    .venv/bin/python bench/run.py [--sizes 100,1024] [--runs 3] [--warmup 1]

For each size: wall time of ``manage.py backup_create`` (gzip and zstd targets) as a ratio to
``sqlite3 SRC ".backup TMP" && gzip -6 -c TMP > OUT`` measured in the same run (medians), and
the peak RSS of our process. Prints a table and rewrites the generated part of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import datagen
import report
from measure import ROOT, Baseline, BenchError, ChildRun, Ours, Sample, launch_floor

BENCH = ROOT / "bench"
WORK = BENCH / "work"
RESULTS_MD = BENCH / "RESULTS.md"
MIB = 1024 * 1024
CACHE_BUDGET = 6 * 1024 * MIB  # cached databases kept under bench/work/data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1024", help="database sizes in MiB, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per measurement")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(part) for part in args.sizes.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--sizes: expected comma-separated whole MiB, got {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes: give at least one size of 1 MiB or more")
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    return args


def check_tools() -> None:
    missing = [tool for tool in ("sqlite3", "gzip", "zstd") if shutil.which(tool) is None]
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
        "ours-gzip": lambda: ours.run(target_name(size, "gzip"), "gzip"),
        "baseline-zstd": lambda: baseline.run(database, "zstd"),
        "ours-zstd": lambda: ours.run(target_name(size, "zstd"), "zstd"),
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


def save_raw(results: dict[int, dict[str, list[Sample]]], startup: list[Sample], floor: ChildRun) -> None:
    payload = {
        "launch_floor": asdict(floor),
        "startup": [asdict(s) for s in startup],
        "sizes": {
            str(size): {k: [asdict(s) for s in v] for k, v in by.items()} for size, by in results.items()
        },
    }
    (WORK / "results.json").write_text(json.dumps(payload, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    code_at_start = report.code_version()
    try:
        check_tools()
        datagen.prune(WORK / "data", args.sizes, CACHE_BUDGET)
        check_disk(args.sizes)
        databases = {size: generate(size) for size in args.sizes}
        baseline, ours = Baseline(WORK / "baseline", logs), Ours(WORK / "home", logs)
        print("setting up a throwaway BACKUPSITE_HOME under bench/work/home ...", flush=True)
        ours.setup({target_name(s, c): (db, c) for s, db in databases.items() for c in ("gzip", "zstd")})
        floor = launch_floor()
        startup = [ours.startup() for _ in range(args.runs + 1)][1:]
        results: dict[int, dict[str, list[Sample]]] = {}
        for size, database in databases.items():
            print(f"measuring {size} MiB ({args.warmup} warm-up + {args.runs} runs each) ...", flush=True)
            results[size] = measure_size(size, database, baseline, ours, args.runs, args.warmup)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    save_raw(results, startup, floor)
    summary = report.summarise(results, startup, floor, databases, args.runs, args.warmup, code_at_start)
    print()
    print(report.console_table(summary))
    if not args.no_write:
        report.write_markdown(RESULTS_MD, summary)
        print(f"\nwrote {RESULTS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
