"""Summarise the parallel-restore runs (``restorejobsbench.measure``): a console table and the
``restore-jobs`` block of bench/RESULTS.md (``bench:begin restore-jobs`` / ``bench:end
restore-jobs`` markers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report_servers import begin_marker, end_marker, replace_block

KEY = "restore-jobs"
BASELINE = "raw-1"
MIB = 1024 * 1024
HEADERS = ["side", "median s", "min-max s", "vs raw-1", "peak RSS MiB"]
WHAT = {
    "raw-1": "gunzip -c | pg_restore (one job, streamed): the baseline",
    "raw-j2": "pg_restore -j 2 on the archive decompressed beforehand (untimed)",
    "raw-gunzip-j2": "gunzip to a file, then pg_restore -j 2 (both timed)",
    "ours-1": "backup_restore, restore_jobs = 1 (default: streamed, one transaction)",
    "ours-j2": "backup_restore, restore_jobs = 2 (spooled, pg_restore -j 2)",
    "ours-j4": "backup_restore, restore_jobs = 4 (spooled, pg_restore -j 4)",
    "ours-j2-zstd": "the same as ours-j2, from a zstd backup",
    "ours-j4-zstd": "the same as ours-j4, from a zstd backup",
}


def _rows(dataset: dict[str, Any], sides: list[str]) -> list[list[str]]:
    medians: dict[str, float] = dataset["medians"]
    base = medians.get(BASELINE)
    rows = []
    for side in sides:
        values = dataset["seconds"].get(side) or []
        if not values:
            continue
        median = medians[side]
        rows.append(
            [
                side,
                f"{median:.2f}",
                f"{min(values):.2f}-{max(values):.2f}",
                f"{median / base:.2f}x" if base else "-",
                f"{dataset['peak_rss_kib'].get(side, 0) / 1024:.1f}",
            ]
        )
    return rows


def _title(dataset: dict[str, Any]) -> str:
    rows = f"{dataset['rows']:,}".replace(",", " ")
    return (
        f"{dataset['name']}: {dataset['description']}; {dataset['tables']} tables, {rows} rows, "
        f"database {dataset['database_bytes'] / MIB:.0f} MiB, archive {dataset['archive_bytes'] / MIB:.0f} MiB, "
        f"stored (gzip) {dataset['stored_bytes'] / MIB:.0f} MiB, "
        f"(zstd) {dataset.get('stored_zstd_bytes', 0) / MIB:.0f} MiB"
    )


def verdicts(result: dict[str, Any]) -> list[str]:
    """Per data set: does a parallel restore of ours beat the raw single-job pipeline?"""
    lines = []
    for dataset in result["datasets"]:
        medians = dataset["medians"]
        base = medians.get(BASELINE)
        ours = {side: medians[side] for side in medians if side.startswith("ours-j")}
        if not base or not ours:
            continue
        best = min(ours, key=ours.__getitem__)
        ratio = ours[best] / base
        verdict = "beats it" if ratio < 1 else "**does not beat it**"
        lines.append(
            f"- {dataset['name']}: the best parallel restore of ours ({best}, {ours[best]:.2f} s) "
            f"{verdict}: {ratio:.2f}x the raw single-job pipeline ({base:.2f} s); the default "
            f"(ours-1) is {medians.get('ours-1', float('nan')) / base:.2f}x."
        )
    return lines


def console_table(result: dict[str, Any]) -> str:
    lines = [
        f"Parallel PostgreSQL restores ({result['seconds']:.0f} s, {result['warmup']} warm-up + "
        f"{result['runs']} runs; load {result['load'][0]} -> {result['load'][-1]})"
    ]
    for dataset in result["datasets"]:
        table = [HEADERS, *_rows(dataset, result["sides"])]
        widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
        lines += ["", _title(dataset)]
        lines += [
            "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in table
        ]
        lines.insert(len(lines) - len(table) + 1, "  ".join("-" * width for width in widths))
    lines += ["", *verdicts(result)]
    return "\n".join(lines)


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(headers), "|" + "|".join("---:" for _ in headers) + "|", *(line(row) for row in rows)]


def markdown_block(result: dict[str, Any], machine: dict[str, str], command: str) -> str:
    m = machine
    versions = "; ".join(f"{name} {value}" for name, value in result["versions"].items())
    lines = [
        begin_marker(KEY),
        "## PostgreSQL parallel restores (`restore_jobs`): latest run",
        "",
        f"Date: {m['date']}. Code: commit {m['code']}. Machine: {m['nproc']} CPUs ({m['CPU']}), "
        f"{m['RAM']} RAM, Linux {m['kernel']}. This part of the run took {result['seconds'] / 60:.1f} min; "
        f"load average (1/5/15 min) {' at the start, '.join(result['load'])} at the end (the machine "
        f"is shared). Versions: {versions}.",
        "",
        f"Command: `{command}`",
        "",
    ]
    for dataset in result["datasets"]:
        lines += [f"### {_title(dataset)}", ""]
        rows = [[*row[:1], WHAT.get(row[0], ""), *row[1:]] for row in _rows(dataset, result["sides"])]
        lines += [*_md_table([HEADERS[0], "what", *HEADERS[1:]], rows), ""]
    lines += ["### Verdicts", "", *verdicts(result), "", "### Commands", "", "```sh"]
    lines += [f"# {side}\n{text}" for side, text in result["commands"].items()]
    lines += [
        "```",
        "",
        f"Method: {result['warmup']} untimed warm-up round(s), then {result['runs']} timed rounds; "
        "every round runs each side once, interleaved; times are medians of wall time. Every side "
        "restores the same archive: the one `backup_create` stored (gzip), whose table of contents "
        "has no data offsets (pg_dump wrote to a pipe). The raw sides restore into `bench_restore` "
        "created just before their clock starts; ours creates it inside its time (a parallel restore "
        "runs only into a database the restore creates). Ours includes starting the Django command, "
        "checking the stored copy's SHA-256 before touching anything, spooling the decoded archive to "
        "BACKUPSITE_TMP (parallel sides) and the row-count check afterwards. After every restore "
        "each table's row count is compared with the source (untimed); `os.sync()` runs before "
        "every side.",
        "",
        end_marker(KEY),
    ]
    return "\n".join(lines)


def write_markdown(path: Path, result: dict[str, Any], machine: dict[str, str], command: str) -> None:
    """Replace the restore-jobs block of RESULTS.md (appended if it has none yet)."""
    replace_block(path, KEY, markdown_block(result, machine, command))
