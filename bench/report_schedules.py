"""Summarise the schedule load runs (one per size): console tables and the ``schedules`` block
of bench/RESULTS.md (``bench:begin schedules`` / ``bench:end schedules`` markers). Every
function takes one ScheduleResult or a list of them (run.py hands over what measure returned)."""

from __future__ import annotations

from pathlib import Path

from report_servers import begin_marker, end_marker, replace_block
from schedule_profile import PHASES
from schedulebench import SAMPLE_SECONDS, SETTLE_SECONDS, SOURCE_ROWS, TIMEOUT_SECONDS, ScheduleResult

Results = ScheduleResult | list[ScheduleResult]
# The parts of a run read from the catalog, in run order (steps by their BackupStep name).
CATALOG_PARTS = (
    "claim", "validate", "dump", "compress", "upload", "verify", "manifest", "finish", "notify",
    "between runs", "run", "outside the dump",
)  # fmt: skip

KEY = "schedules"
FLAT_LIMIT = 1.10  # RSS at the last completion / at the first: above this, not flat


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(headers), "|" + "|".join("---:" for _ in headers) + "|", *(line(row) for row in rows)]


HEADERS = [
    "worker", "backups run", "RSS at the slot MiB", "RSS at first completion MiB",
    "RSS at last completion MiB", "last / first", "peak RSS MiB", "main / pool child peak MiB",
    "processes seen",
]  # fmt: skip


def rows(result: ScheduleResult) -> list[list[str]]:
    out = []
    for worker in result.workers:
        ratio = (
            worker.rss_last_completion_kib / worker.rss_first_completion_kib
            if worker.rss_first_completion_kib
            else 0
        )
        out.append(
            [
                worker.name,
                str(worker.backups_run),
                f"{worker.rss_start_kib / 1024:.1f}",
                f"{worker.rss_first_completion_kib / 1024:.1f}",
                f"{worker.rss_last_completion_kib / 1024:.1f}",
                f"{ratio:.3f}",
                f"{worker.peak_rss_kib / 1024:.1f}",
                f"{worker.main_peak_rss_kib / 1024:.1f} / {worker.pool_peak_rss_kib / 1024:.1f}",
                str(len(worker.pids_seen)),
            ]
        )
    return out


def _listed(results: Results) -> list[ScheduleResult]:
    return results if isinstance(results, list) else [results]


def _text_table(headers: list[str], body: list[list[str]]) -> list[str]:
    table = [headers, *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def console_table(results: Results) -> str:
    listed = _listed(results)
    lines = [
        "Schedule load: targets due in the same minute",
        *_text_table(SUMMARY_HEADERS, summary_rows(listed)),
    ]
    for result in listed:
        lines += ["", f"{result.count} schedules in one minute, {len(result.workers)} workers"]
        lines += _text_table(HEADERS, rows(result))
        lines += ["", f"Per run, from the catalog ({result.count} schedules):"]
        lines += _text_table(PART_HEADERS, part_rows(result))
        if result.profile is not None:
            lines += ["", f"Per run, in-process ({result.profile['runs']} firings after the load):"]
            lines += _text_table(PHASE_HEADERS, phase_rows(result))
        lines += ["", *verdicts(result)]
    return "\n".join(lines)


SUMMARY_HEADERS = [
    "targets", "all succeed", "none twice", "minute start -> last completion s", "runs/s",
    "per run outside the dump ms (median, catalog)", "between runs ms (median)",
    "overhead in-process ms (median)", "catalog queries per run", "worker RSS at the slot -> end MiB",
    "verdict",
]  # fmt: skip


def summary_rows(results: list[ScheduleResult]) -> list[list[str]]:
    out = []
    for result in results:
        success = result.statuses.get("success", 0)
        throughput = result.count / result.last_completion_s if result.last_completion_s > 0 else 0.0
        outside = result.overhead.get("outside the dump")
        between = result.overhead.get("between runs")
        profile = result.profile
        rss = "; ".join(
            f"{w.name} {w.rss_start_kib / 1024:.0f} -> {w.rss_end_kib / 1024:.0f}" for w in result.workers
        )
        out.append(
            [
                f"{result.count:,}",
                f"{success}/{result.count}",
                "yes" if result.duplicates == 0 else f"NO ({result.duplicates})",
                f"{result.last_completion_s:.1f}",
                f"{throughput:.1f}",
                f"{outside.median_ms:.1f}" if outside else "",
                f"{between.median_ms:.1f}" if between else "",
                f"{profile['outside_dump_ms_median']:.1f}" if profile else "",
                f"{profile['queries_median']:.0f}" if profile else "",
                rss,
                "PASS" if passed(result) else "FAIL",
            ]
        )
    return out


PART_HEADERS = ["part", "runs", "median ms", "p90 ms", "max ms"]


def part_rows(result: ScheduleResult) -> list[list[str]]:
    out = []
    for name in CATALOG_PARTS:
        spread = result.overhead.get(name)
        if spread is None or not spread.runs:
            continue
        out.append(
            [
                name,
                str(spread.runs),
                f"{spread.median_ms:.1f}",
                f"{spread.p90_ms:.1f}",
                f"{spread.max_ms:.1f}",
            ]
        )
    return out


PHASE_HEADERS = ["phase", "median ms", "p90 ms", "queries (median)"]


def phase_rows(result: ScheduleResult) -> list[list[str]]:
    profile = result.profile
    if profile is None:
        return []
    out = [
        [name, f"{stats['ms_median']:.1f}", f"{stats['ms_p90']:.1f}", f"{stats['queries_median']:g}"]
        for name in PHASES
        if (stats := profile["phases"].get(name))
    ]
    out.append(
        [
            "total (outside the dump)",
            f"{profile['total_ms_median']:.1f} ({profile['outside_dump_ms_median']:.1f})",
            "",
            f"{profile['queries_median']:g} (max {profile['queries_max']})",
        ]
    )
    return out


def passed(result: ScheduleResult) -> bool:
    success = result.statuses.get("success", 0)
    return (
        success == result.count
        and result.duplicates == 0
        and result.lost == 0
        and result.not_terminal == 0
        and all(_flat(w.rss_first_completion_kib, w.rss_last_completion_kib) for w in result.workers)
    )


def _flat(first: int, last: int) -> bool:
    return bool(first) and last / first <= FLAT_LIMIT


def verdicts(result: ScheduleResult) -> list[str]:
    n = result.count
    success = result.statuses.get("success", 0)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(result.statuses.items()))
    lines = [
        f"- all finish: {'yes' if success == n else '**NO**'} ({success}/{n} SUCCESS; statuses: {statuses or 'none'}).",
        f"- none twice: {'yes' if result.duplicates == 0 else '**NO**'} ({result.duplicates} schedules with more "
        f"than one backup in the slot; {result.schedules_with_backup} schedules have one; checked "
        f"{SETTLE_SECONDS} s after the last completion).",
        f"- none lost: {'yes' if result.lost == 0 and result.not_terminal == 0 else '**NO**'} "
        f"({result.lost} schedules without a terminal backup, {result.not_terminal} backups left "
        f"pending/running).",
    ]
    throughput = n / result.last_completion_s if result.last_completion_s > 0 else 0.0
    lines.append(
        f"- time from the minute's start to the last completion: **{result.last_completion_s:.1f} s** "
        f"(first backup started at +{result.first_start_s:.2f} s, first completed at "
        f"+{result.first_completion_s:.2f} s; {throughput:.2f} backups/s overall)."
    )
    for worker in result.workers:
        flat = _flat(worker.rss_first_completion_kib, worker.rss_last_completion_kib)
        lines.append(
            f"- worker {worker.name}: peak RSS **{worker.peak_rss_kib / 1024:.1f} MiB** (main + pool child); "
            f"{worker.rss_first_completion_kib / 1024:.1f} MiB at the first completion -> "
            f"{worker.rss_last_completion_kib / 1024:.1f} MiB at the last: "
            f"{'flat' if flat else '**NOT FLAT**'} (limit +{FLAT_LIMIT - 1:.0%}); ran {worker.backups_run} backups."
        )
    if result.unattributed:
        lines.append(f"- {result.unattributed} backups name a worker pid not seen in either worker tree.")
    if result.profile_error:
        lines.append(f"- the in-process profile failed: {result.profile_error}")
    lines.append(f"- verdict: {'**PASS**' if passed(result) else '**FAIL**'}.")
    return lines


def markdown_block(results: Results, machine: dict[str, str], command: str) -> str:
    m = machine
    listed = _listed(results)
    result = listed[-1]  # the method is the same for every size; the largest is described
    lines = [
        begin_marker(KEY),
        "## Schedule load: latest run",
        "",
        f"Date: {m['date']}. Code: commit {m['code']}. Machine: {m['nproc']} CPUs ({m['CPU']}), "
        f"{m['RAM']} RAM, Linux {m['kernel']}. "
        + " ".join(
            f"The {one.count:,}-target load took {one.seconds:.0f} s (setup {one.setup_seconds:.0f} s, then "
            f"waiting for the slot); load average (1/5/15 min) {' at the start, '.join(one.load)} at the end."
            for one in listed
        )
        + f" The machine is shared. Python {result.versions.get('python', '?')}, Celery "
        f"{result.versions.get('celery', '?')}. Launch floor (ru_maxrss of `true`): {m.get('launch floor', '?')}.",
        "",
        f"Command: `{command}`",
        "",
        *_md_table(SUMMARY_HEADERS, summary_rows(listed)),
        "",
    ]
    for one in listed:
        lines += [
            f"### {one.count:,} schedules due at {one.slot} with {len(one.workers)} worker processes",
            "",
            *_md_table(HEADERS, rows(one)),
            "",
            f"Per run, from the catalog ({one.statuses.get('success', 0)} successful runs):",
            "",
            *_md_table(PART_HEADERS, part_rows(one)),
            "",
        ]
        if one.profile is not None:
            lines += [
                f"Per run, in-process ({one.profile['runs']} firings after the load, workers stopped):",
                "",
                *_md_table(PHASE_HEADERS, phase_rows(one)),
                "",
            ]
        lines += [*verdicts(one), ""]
    lines += [
        "Method: for each size, a throwaway BACKUPSITE_HOME with a SQLite catalog file (`DATABASE_URL`), a Redis "
        "broker (`redis-server` on a free loopback port), `manage.py migrate`, then "
        f"`backup_config apply` of a generated TOML: N SQLite targets (each a copy of a "
        f"{result.source_kib:.0f} KiB database, {SOURCE_ROWS} rows of ~1 KiB) on one local storage, "
        f"and N schedules `M H * * *` (UTC) for one minute at least 50 s (or 0.06 s per target) ahead. "
        f"{len(result.workers)} workers (`{result.argv[0]}`) and one beat (DatabaseScheduler), "
        "each in its own process group with the same environment. The catalog is read (read-only "
        "`sqlite3`) every second until every schedule has a terminal backup, then for "
        f"{SETTLE_SECONDS} s more (timeout {TIMEOUT_SECONDS} s). RSS: the sum of VmRSS of each "
        "worker's main process and its pool child (`/proc`), sampled every "
        f"{SAMPLE_SECONDS} s (the main and pool peaks are each process's own; their sum double-counts "
        "the pages they share since the fork); the RSS at a "
        "completion is the nearest sample. Times are `completed_at`/`started_at` from the catalog "
        "relative to the slot's minute. Backups are attributed to a worker by the pid in "
        "`Backup.worker` (host:pid). Per run from the catalog: `claim` is `created_at` -> "
        "`started_at`, each step its BackupStep's span (summed when a step repeats), `finish` the "
        "last step's end -> `completed_at`, `between runs` a worker process's previous "
        "`completed_at` -> its next run's `created_at` (the firing's lookups, the slot claim, "
        "notifications, shrinkage and recovery checks, retention, Celery's own work), `outside "
        "the dump` the run minus its dump step. In-process: after the load, with the workers "
        "stopped, `schedule_profile.py` fires the first schedules once more (each for the next "
        "day's slot) in one process, exactly as the task does, and attributes every catalog query "
        "(`connection.execute_wrapper`, transaction statements such as `BEGIN IMMEDIATE` "
        "included) and every millisecond to the innermost phase running.",
        "",
        end_marker(KEY),
    ]
    return "\n".join(lines)


def write_markdown(path: Path, results: Results, machine: dict[str, str], command: str) -> None:
    """Replace the schedules block of RESULTS.md (appended if it has none yet)."""
    replace_block(path, KEY, markdown_block(results, machine, command))
