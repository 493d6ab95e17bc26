"""Summarise the schedule load run: a console table and the ``schedules`` block of
bench/RESULTS.md (``bench:begin schedules`` / ``bench:end schedules`` markers)."""

from __future__ import annotations

from pathlib import Path

from report_servers import begin_marker, end_marker, replace_block
from schedulebench import SAMPLE_SECONDS, SETTLE_SECONDS, SOURCE_ROWS, TIMEOUT_SECONDS, ScheduleResult

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


def console_table(result: ScheduleResult) -> str:
    table = [HEADERS, *rows(result)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = [f"Schedule load: {result.count} schedules in one minute, {len(result.workers)} workers"]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in table]
    lines.insert(2, "  ".join("-" * width for width in widths))
    lines += ["", *verdicts(result)]
    return "\n".join(lines)


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
    lines.append(f"- verdict: {'**PASS**' if passed(result) else '**FAIL**'}.")
    return lines


def markdown_block(result: ScheduleResult, machine: dict[str, str], command: str) -> str:
    m = machine
    lines = [
        begin_marker(KEY),
        "## Schedule load: latest run",
        "",
        f"Date: {m['date']}. Code: commit {m['code']}. Machine: {m['nproc']} CPUs ({m['CPU']}), "
        f"{m['RAM']} RAM, Linux {m['kernel']}. This part of the run took {result.seconds:.0f} s "
        f"(setup {result.setup_seconds:.0f} s, then waiting for the slot); load average (1/5/15 min) "
        f"{' at the start, '.join(result.load)} at the end (the machine is shared). Python "
        f"{result.versions.get('python', '?')}, Celery {result.versions.get('celery', '?')}. "
        f"Launch floor (ru_maxrss of `true`): {m.get('launch floor', '?')}.",
        "",
        f"Command: `{command}`",
        "",
        f"### {result.count} schedules due at {result.slot} with {len(result.workers)} worker processes",
        "",
        *_md_table(HEADERS, rows(result)),
        "",
        *verdicts(result),
        "",
        "Method: a throwaway BACKUPSITE_HOME with a SQLite catalog file (`DATABASE_URL`), a Redis "
        "broker (`redis-server` on a free loopback port), `manage.py migrate`, then "
        f"`backup_config apply` of a generated TOML: {result.count} SQLite targets (each a copy of a "
        f"{result.source_kib:.0f} KiB database, {SOURCE_ROWS} rows of ~1 KiB) on one local storage, "
        f"and {result.count} schedules `M H * * *` (UTC) for one minute at least 50 s ahead. "
        f"{len(result.workers)} workers (`{result.argv[0]}`) and one beat (DatabaseScheduler), "
        "each in its own process group with the same environment. The catalog is read (read-only "
        "`sqlite3`) every second until every schedule has a terminal backup, then for "
        f"{SETTLE_SECONDS} s more (timeout {TIMEOUT_SECONDS} s). RSS: the sum of VmRSS of each "
        "worker's main process and its pool child (`/proc`), sampled every "
        f"{SAMPLE_SECONDS} s (the main and pool peaks are each process's own; their sum double-counts "
        "the pages they share since the fork); the RSS at a "
        "completion is the nearest sample. Times are `completed_at`/`started_at` from the catalog "
        "relative to the slot's minute. Backups are attributed to a worker by the pid in "
        "`Backup.worker` (host:pid).",
        "",
        end_marker(KEY),
    ]
    return "\n".join(lines)


def write_markdown(path: Path, result: ScheduleResult, machine: dict[str, str], command: str) -> None:
    """Replace the schedules block of RESULTS.md (appended if it has none yet)."""
    replace_block(path, KEY, markdown_block(result, machine, command))
