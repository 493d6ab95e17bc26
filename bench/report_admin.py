"""Summarise the admin pages runs: a console table and the ``admin`` block of bench/RESULTS.md
(``bench:begin admin`` / ``bench:end admin`` markers)."""

from __future__ import annotations

import statistics
from pathlib import Path

from adminbench import HEADLINE, TARGET_MS, AdminResult, CatalogResult
from admindata import BACKUPS, MAX_AGE_DAYS, TARGETS
from report_servers import begin_marker, end_marker, replace_block

MIB = 1024 * 1024
KEY = "admin"
TITLES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _number(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(headers), "|" + "|".join("---:" for _ in headers) + "|", *(line(row) for row in rows)]


HEADERS = [
    "catalog", "page", "server ms (median)", "min-max ms", "of which dashboard() ms", "SQL queries",
    "SQL ms in execute()", "HTML KiB", "verdict",
]  # fmt: skip


def rows(result: AdminResult) -> list[list[str]]:
    out = []
    for catalog in result.catalogs:
        for page in catalog.pages:
            headline = page.label in HEADLINE
            verdict = (
                ("met" if page.median_ms < TARGET_MS else "**MISSED**") if headline else "(not a target)"
            )
            out.append(
                [
                    TITLES[catalog.kind],
                    f"{page.label} `{page.url}`",
                    f"{page.median_ms:.1f}",
                    f"{min(page.seconds) * 1000:.1f}-{max(page.seconds) * 1000:.1f}",
                    f"{statistics.median(page.data_seconds) * 1000:.1f}" if page.data_seconds else "",
                    str(page.queries),
                    f"{page.query_seconds * 1000:.1f}",
                    f"{page.response_bytes / 1024:.0f}",
                    verdict,
                ]
            )
    return out


def console_table(result: AdminResult) -> str:
    table = [HEADERS, *rows(result)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = [f"Admin pages ({result.seconds:.0f} s, {result.warmup} warm-up + {result.runs} rounds)"]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in table]
    lines.insert(2, "  ".join("-" * width for width in widths))
    lines += ["", *verdicts(result)]
    return "\n".join(lines)


def verdicts(result: AdminResult) -> list[str]:
    lines = []
    for catalog in result.catalogs:
        headline = [page for page in catalog.pages if page.label in HEADLINE]
        missed = [page.label for page in headline if page.median_ms >= TARGET_MS]
        slowest = max(max(page.seconds) for page in headline) * 1000
        state = f"**MISSED** by {', '.join(missed)}" if missed else "met"
        lines.append(
            f"- {TITLES[catalog.kind]}: under {TARGET_MS:.0f} ms of server time for the dashboard and the "
            f"backup list: {state} (medians "
            + ", ".join(f"{page.label} {page.median_ms:.0f} ms" for page in headline)
            + f"; slowest single request {slowest:.0f} ms)."
        )
        dashboard = next((page for page in catalog.pages if page.data_seconds), None)
        if dashboard is not None:
            data = statistics.median(dashboard.data_seconds) * 1000
            lines.append(
                f"  - of its dashboard, `dashboard()` (every query but the session's and the user's, "
                f"and the summaries) took {data:.0f} ms; the rest, {dashboard.median_ms - data:.0f} ms, "
                "is the view and the template drawing a row per target."
            )
    lines.append(
        "- query counts: constant in the number of targets and backups by construction; the tests "
        "`tests/test_dashboard.py::test_it_keeps_the_query_count_flat_as_targets_and_backups_grow` and "
        "`tests/test_admin_forms.py::test_it_lists_backups_with_as_many_queries_for_many_rows_as_for_few` "
        "assert it at two sizes."
    )
    return lines


def _catalog_rows(result: AdminResult) -> list[list[str]]:
    out = []
    for catalog in result.catalogs:
        info = catalog.catalog
        counts = info.get("counts", {})
        generated = (
            f"now, in {catalog.generate_seconds:.0f} s"
            if catalog.generated_now
            else f"cached (generated {info.get('generated_at', '?')[:16]} UTC in {info.get('wall_seconds', 0):.0f} s)"
        )
        out.append(
            [
                TITLES[catalog.kind],
                f"{catalog.database_bytes / MIB:.0f}",
                ", ".join(f"{counts.get(key, 0):,} {key}".replace(",", " ") for key in counts),
                ", ".join(
                    f"{n:,} {status}".replace(",", " ") for status, n in info.get("statuses", {}).items()
                ),
                ", ".join(
                    f"{n:,} {status}".replace(",", " ") for status, n in info.get("copy_statuses", {}).items()
                ),
                generated,
                f"{catalog.connect_ms:.1f}",
                f"{catalog.rss_setup_kib / 1024:.1f}",
                f"{catalog.hwm_kib / 1024:.1f}",
                f"{catalog.maxrss_kib / 1024:.1f}",
            ]
        )
    return out


CATALOG_HEADERS = [
    "catalog", "size MiB", "rows", "backups by status", "copies by status", "generated",
    "connect ms", "VmRSS after set-up MiB", "peak RSS (VmHWM) MiB", "ru_maxrss MiB",
]  # fmt: skip


def _slowest(catalog: CatalogResult) -> list[str]:
    lines = []
    for page in catalog.pages:
        if page.label not in HEADLINE:
            continue
        for seconds, sql in page.slowest[:2]:
            short = sql if len(sql) <= 300 else sql[:297] + "..."
            lines.append(f"- {TITLES[catalog.kind]}, {page.label}: {seconds * 1000:.1f} ms `{short}`")
    return lines


def markdown_block(result: AdminResult, machine: dict[str, str], command: str) -> str:
    m = machine
    versions = {key: value for catalog in result.catalogs for key, value in catalog.versions.items()}
    lines = [
        begin_marker(KEY),
        "## Admin pages: latest run",
        "",
        f"Date: {m['date']}. Code: commit {m['code']}. Machine: {m['nproc']} CPUs ({m['CPU']}), "
        f"{m['RAM']} RAM, Linux {m['kernel']}. This part of the run took {result.seconds:.0f} s; "
        f"load average (1/5/15 min) {' at the start, '.join(result.load)} at the end (the machine is "
        "shared). " + "; ".join(f"{key} {value}" for key, value in versions.items()) + ".",
        "",
        f"Command: `{command}`",
        "",
        f"### Server time per page, {result.warmup} warm-up + {result.runs} timed rounds "
        f"({_number(TARGETS)} targets, {_number(BACKUPS)} backups)",
        "",
        *_md_table(HEADERS, rows(result)),
        "",
        *verdicts(result),
        "",
        "### The catalogs and the measuring process",
        "",
        *_md_table(CATALOG_HEADERS, _catalog_rows(result)),
        "",
        "### Slowest queries of one request (the two pages the target is about)",
        "",
        *(line for catalog in result.catalogs for line in _slowest(catalog)),
        "",
        "Method: `bench/admindata.py` generates each catalog once (fixed seed, bulk `executemany` / "
        f"`COPY`; the shape is in its docstring) and it is cached under `bench/work/admin/` for "
        f"{MAX_AGE_DAYS} days (or until its generator or a migration it was built with changes). "
        "One child per catalog (`bench/adminbench.py child KIND RUNS WARMUP`) logs a superuser in with "
        "Django's test `Client` and times `client.get(url)` in-process (`time.perf_counter`: "
        "middleware, view, queries, template rendering), the pages interleaved in each round, with "
        "the deployment's settings (`DEBUG` off; `DATABASE_CONN_MAX_AGE` unset, so every request "
        "opens its own database connection, whose cost is the connect column). One more request of "
        "each page runs under `CaptureQueriesContext` for the query count, the queries' own time and "
        "the slowest ones; their time is Django's query log, which times `execute()` only: "
        "PostgreSQL answers within it, SQLite does much of its work later, while the rows are "
        'fetched, so SQLite\'s figures understate it. "Of which dashboard() ms" is '
        "`backups.services.dashboard()` called alone in the same rounds (every query of the "
        "dashboard and the assembly of its 1 000 summaries); the rest of the request is the view, "
        "the template and the session and user look-ups. Each page's HTML is checked once (the dashboard lists every target, the "
        "lists 100 rows). PostgreSQL: the test suite's throwaway server settings (fsync off, "
        "`shared_buffers` 128 MB), its data directory kept between runs; `VACUUM ANALYZE` after "
        "generation, as autovacuum would have done. SQLite: the file as Django leaves it (WAL, no "
        "`ANALYZE`). Reproduce: `.venv/bin/python bench/run.py --engines admin`.",
        "",
        end_marker(KEY),
    ]
    return "\n".join(lines)


def write_markdown(path: Path, result: AdminResult, machine: dict[str, str], command: str) -> None:
    """Replace the admin block of RESULTS.md (appended if it has none yet)."""
    replace_block(path, KEY, markdown_block(result, machine, command))
