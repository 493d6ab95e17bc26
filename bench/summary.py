"""The side-by-side Summary block at the top of bench/RESULTS.md (``bench:begin summary`` /
``bench:end summary`` markers), or of bench/work/QUICK.md for ``--quick``.

Built only from what each engine saved (``results-KEY.json``, and ``meta-KEY.json`` beside it:
machine, code, command, rounds), so ``run.py --summary-only`` can rebuild it after engines were
run one at a time, without measuring anything. One table per database engine (ours / the raw
tool pipeline / django-dbbackup where it applies), one row per storage kind, the encryption
ratios, each with its medians, commands, versions and run facts, and a link to the engine's
detailed block below. A result file saved before a side existed shows "-" for that side.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from measure import ROOT, ChildRun, Sample
from report_servers import (
    GOALS,
    MACHINE_VERSIONS,
    Side,
    begin_marker,
    checked_scales,
    end_marker,
    goal_verdict,
    side,
)
from serverbench import EngineResult, ScaleResult

KEY = "summary"
MIB = 1024 * 1024
# Each engine's detailed block: its heading (for the link) and whether it is side by side.
HEADINGS = {
    "sqlite": "SQLite: latest run",
    "postgresql": "PostgreSQL: latest run",
    "mariadb": "MariaDB: latest run",
    "storages": "Storages: upload throughput, latest run",
    "encryption": "Encryption (age): latest run",
    "restore-jobs": "PostgreSQL parallel restores (`restore_jobs`): latest run",
    "retention": "Retention planning: latest run",
    "admin": "Admin pages: latest run",
    "schedules": "Schedule load: latest run",
}
STORAGE_GOALS = {"s3": 1.00, "gcs": 1.5}  # issue 22: upload / the plain SDK, of a 1 GiB file
STORAGE_GOAL_MIB = 1024
ENCRYPTION_GOALS = {"gzip": 1.05, "zstd": 1.15}  # issue 19: encrypted / plain twin


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return "#" + re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _load(results: Path, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    path = results / f"results-{key}.json"
    if key == "sqlite" and not path.exists():
        path = results / "results.json"  # its name before issue 22
    if not path.exists():
        return None
    meta_path = results / f"meta-{key}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return json.loads(path.read_text()), meta


def _sample(data: dict[str, Any]) -> Sample:
    processes = {name: ChildRun(**run) for name, run in data.get("processes", {}).items()}
    known = {f.name for f in fields(Sample)} - {"processes"}
    return Sample(**{k: v for k, v in data.items() if k in known}, processes=processes)


def engine_result(data: dict[str, Any]) -> EngineResult:
    """A saved ``results-postgresql.json`` / ``results-mariadb.json`` read back."""
    scales = [
        ScaleResult(
            scale=item["scale"],
            database_bytes=item["database_bytes"],
            rows=item["rows"],
            generate_seconds=item["generate_seconds"],
            samples={label: [_sample(s) for s in samples] for label, samples in item["samples"].items()},
            verified_counts=item.get("verified_counts", {}),
        )
        for item in data["scales"]
    ]
    return EngineResult(
        key=data["key"],
        title=data["title"],
        versions=data.get("versions", {}),
        scales=scales,
        seconds=data.get("seconds", 0.0),
        commands=data.get("commands", {}),
        startup=[_sample(s) for s in data.get("startup", [])],
        load=data.get("load", []),
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(ours: Side | None, base: Side | None) -> float | None:
    return None if ours is None or base is None else ours.seconds / base.seconds


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    text = ("scale", "size", "operation", "raw pipeline", "storage", "source", "side", "compression", "goal")
    align = ["---" if header.startswith(text) else "---:" for header in headers]
    return [line(headers), "| " + " | ".join(align) + " |", *(line(row) for row in rows)]


def _facts(key: str, meta: dict[str, Any], rounds: str, extra: str = "") -> list[str]:
    """The engine's run line: when, which code, how many rounds, the command, a link."""
    heading = HEADINGS.get(key, "")
    link = f"[details]({anchor(heading)})" if heading else f"details: the `bench:begin {key}` block"
    machine = meta.get("machine", {})
    if machine:
        when = f"Run {machine.get('date', '?')}, code {short_code(machine.get('code', '?'))}"
    else:
        when = "Run date, code and machine not recorded (saved before summary.py existed)"
    command = f" Command: `{meta['command']}`." if meta.get("command") else ""
    return [f"{when}; {rounds}.{extra}{command} {link}."]


def short_code(text: str) -> str:
    """``report.code_version``'s text without the list of changed files (the engine's block has
    it): the commit, whether files were uncommitted, and the application files' digest."""
    return re.sub(r" in [^()]*? \(application files", " (application files", text)


def _versions(meta: dict[str, Any], own: dict[str, str]) -> str:
    machine = meta.get("machine", {})
    versions = {k: machine[k] for k in MACHINE_VERSIONS if k in machine}
    versions.update(own)
    return "Versions: " + ("; ".join(f"{k} {v}" for k, v in versions.items()) or "not recorded") + "."


def _commands(commands: list[tuple[str, str]]) -> list[str]:
    if not commands:
        return []
    lines = ["<details><summary>Commands</summary>", "", "```sh"]
    for what, command in commands:
        lines += [f"# {what}", command]
    return [*lines, "```", "", "</details>"]


def _rounds(counts: set[int]) -> str:
    text = "/".join(str(n) for n in sorted(counts)) or "?"
    return f"medians of {text} timed run(s) per side"


# -- PostgreSQL and MariaDB ---------------------------------------------------------------------

SERVER_ROWS = (  # operation, ours, raw side, raw pipeline, django-dbbackup side
    ("backup, gzip", "ours-gzip", "raw-gzip", "dump | gzip -6 > f", "dbbackup"),
    ("backup, zstd", "ours-zstd", "raw-zstd", "dump | zstd -3 > f", ""),
    ("backup, zstd", "ours-zstd", "raw-dump", "dump alone, | cat > /dev/null (floor)", ""),
    ("restore, gzip backup", "ours-restore", "raw-restore", "gunzip -c f | restore", "dbbackup-restore"),
    ("restore, zstd backup", "ours-restore-zstd", "raw-restore", "gunzip -c f | restore", ""),
    # The same in a warm process, as a worker runs scheduled backups (bench/warm.py): no start-up.
    ("backup, gzip, warm worker", "ours-gzip-warm", "raw-gzip", "dump | gzip -6 > f", ""),
    ("backup, zstd, warm worker", "ours-zstd-warm", "raw-zstd", "dump | zstd -3 > f", ""),
    ("backup, zstd, warm worker", "ours-zstd-warm", "raw-dump", "dump alone, | cat > /dev/null (floor)", ""),
    # The zstd path alone: row_counts = false (PostgreSQL) leaves out the second scan on the server.
    ("backup, zstd, warm, no row counts", "ours-zstd-nocount-warm", "raw-zstd", "dump | zstd -3 > f", ""),
    ("restore, gzip backup, warm worker", "ours-restore-warm", "raw-restore", "gunzip -c f | restore", ""),
)


def _goal_text(by: dict[str, Side], ours: str, base: str, checked: bool) -> str:
    parts = []
    for goal in GOALS:
        if goal.side == ours and goal.baseline == base:
            _, verdict = goal_verdict(by, goal, checked)
            parts.append(f"<= {goal.limit:.2f}: {verdict}")
            if base == "raw-gzip":  # the dbbackup goal is on the same row
                dbb = next(g for g in GOALS if g.baseline == "dbbackup")
                _, dbb_verdict = goal_verdict(by, dbb, checked)
                parts.append(f"/ dbbackup <= {dbb.limit:.2f}: {dbb_verdict}")
    return "; ".join(parts) or "-"


def server_section(result: EngineResult, meta: dict[str, Any]) -> list[str]:
    checked = checked_scales([scale.scale for scale in result.scales])
    rows = []
    counts = set()
    for scale in result.scales:
        by = {label: side(samples) for label, samples in scale.samples.items()}
        counts |= {len(samples) for samples in scale.samples.values()}
        for operation, ours, raw, pipeline, dbb in SERVER_ROWS:
            if ours not in by:
                continue
            mine, base, other = by[ours], by.get(raw), by.get(dbb) if dbb else None
            rows.append(
                [
                    str(scale.scale),
                    operation,
                    pipeline,
                    _fmt(base.seconds if base else None),
                    f"{mine.seconds:.2f}",
                    _fmt(_ratio(mine, base)),
                    _fmt(other.seconds if other else None) if dbb else "",
                    _fmt(_ratio(mine, other)) if dbb else "",
                    f"{mine.rss_mib:.1f}",
                    _goal_text(by, ours, raw, scale.scale in checked),
                ]
            )
    headers = [
        "scale", "operation", "raw pipeline", "raw s", "ours s", "ours / raw",
        "django-dbbackup s", "ours / dbbackup", "ours peak RSS MiB", "goal (issue 22)",
    ]  # fmt: skip
    sizes = ", ".join(f"scale {s.scale} = {s.database_bytes / MIB:.0f} MiB" for s in result.scales)
    c = result.commands
    commands = [
        (what, c[name])
        for what, name in (
            ("raw backup", "raw backup"),
            ("raw backup, zstd", "raw backup zstd"),
            ("the floor: the dump tool alone", "raw dump floor"),
            ("raw restore", "raw restore"),
            ("ours, backup", "ours backup"),
            ("ours, restore", "ours restore"),
            ("django-dbbackup, backup", "dbbackup backup"),
            ("django-dbbackup, restore", "dbbackup restore"),
        )
        if name in c
    ]
    load = f" Load average {' at the start, '.join(result.load)} at the end." if result.load else ""
    return [
        f"### {result.title}",
        "",
        *_facts(result.key, meta, _rounds(counts), f" Databases: {sizes}.{load}"),
        "",
        _versions(meta, result.versions),
        "",
        *_table(headers, rows),
        "",
        *_commands(commands),
    ]


# -- SQLite -------------------------------------------------------------------------------------


def sqlite_section(data: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    rows, counts = [], set()
    for size, by_label in sorted(data["sizes"].items(), key=lambda item: int(item[0])):
        by = {label: side([_sample(s) for s in samples]) for label, samples in by_label.items()}
        counts |= {len(samples) for samples in by_label.values()}
        for compression in ("gzip", "zstd"):
            mine, base = by.get(f"ours-{compression}"), by.get(f"baseline-{compression}")
            if mine is None:
                continue
            rows.append(
                [
                    f"{size} MiB",
                    f"backup, {compression}",
                    f'sqlite3 SRC ".backup TMP" && {compression} -{6 if compression == "gzip" else 3} -c TMP',
                    _fmt(base.seconds if base else None),
                    f"{mine.seconds:.2f}",
                    _fmt(_ratio(mine, base)),
                    f"{mine.rss_mib:.1f}",
                ]
            )
    headers = ["size", "operation", "raw pipeline", "raw s", "ours s", "ours / raw", "ours peak RSS MiB"]
    commands = list(zip(("raw, gzip", "raw, zstd", "ours"), data.get("commands", []), strict=False))
    return [
        "### SQLite",
        "",
        *_facts("sqlite", meta, _rounds(counts), " django-dbbackup: not compared (SQLite is a file copy)."),
        "",
        _versions(meta, {}),
        "",
        *_table(headers, rows),
        "",
        *_commands(commands),
    ]


# -- storages -----------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def storages_section(data: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    runs: dict[str, list[dict[str, Any]]] = data["runs"]
    size_mib = data["size_bytes"] / MIB
    rows, counts = [], set()
    for kind in data["kinds"]:
        raw, ours = runs.get(f"raw-{kind}"), runs.get(f"ours-{kind}")
        if not raw or not ours:
            continue
        counts |= {len(raw), len(ours)}
        raw_s = _median([r["seconds"] for r in raw])
        ours_s = _median([r["seconds"] for r in ours])
        confirmed = _median([r["seconds"] + r["confirm_seconds"] for r in ours])
        goal = STORAGE_GOALS.get(kind)
        if goal is None:
            verdict = "-"
        elif size_mib < STORAGE_GOAL_MIB:
            verdict = f"<= {goal:.2f}: for information (the goal is for 1 GiB)"
        else:
            verdict = f"<= {goal:.2f}: {'met' if ours_s / raw_s <= goal else '**MISSED**'}"
        rows.append(
            [
                kind,
                f"{raw_s:.2f}",
                f"{ours_s:.2f}",
                f"{ours_s / raw_s:.2f}",
                f"{size_mib / ours_s:.0f}",
                f"{confirmed:.2f}",
                f"{max(r['hwm_kib'] for r in ours) / 1024:.1f}",
                verdict,
            ]
        )
    if data.get("runs", {}).get("fanout"):
        fan = runs["fanout"]
        rows.append(
            [
                f"fan-out {'+'.join(data.get('fanout', []))}",
                "-",
                f"{_median([r['seconds'] for r in fan]):.2f}",
                "-",
                f"{size_mib / _median([r['seconds'] for r in fan]):.0f}",
                f"{_median([r['seconds'] + r['confirm_seconds'] for r in fan]):.2f}",
                f"{max(r['hwm_kib'] for r in fan) / 1024:.1f}",
                "-",
            ]
        )
    headers = [
        "storage", "plain client s", "ours s", "ours / plain", "ours MiB/s", "ours + confirm s",
        "ours peak RSS MiB", "goal (issue 22)",
    ]  # fmt: skip
    skipped = data.get("skipped") or {}
    note = f" Skipped: {', '.join(f'{k} ({v})' for k, v in skipped.items())}." if skipped else ""
    return [
        "### Storages (upload)",
        "",
        *_facts("storages", meta, _rounds(counts), f" File: {size_mib:.0f} MiB of random bytes.{note}"),
        "",
        _versions(meta, data.get("versions", {})),
        "",
        *_table(headers, rows),
        "",
        "The plain client is each kind's SDK or library with its defaults (the storages block says "
        "which call); ours is `build_storage(...).open_writer()`, 1 MiB writes, `commit()`.",
    ]


# -- encryption ---------------------------------------------------------------------------------


def encryption_section(data: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    rows, counts = [], set()
    sources = data.get("sources", [])
    largest = {source["engine"]: source["size"] for source in sources}  # sources are in size order
    for source in sources:
        checked = largest[source["engine"]] == source["size"]
        by = {label: side([_sample(s) for s in samples]) for label, samples in source["samples"].items()}
        counts |= {len(samples) for samples in source["samples"].values()}
        unit = "MiB" if source["engine"] == "sqlite" else "(pgbench scale)"
        for compression in ("gzip", "zstd"):
            plain, encrypted = by.get(compression), by.get(f"{compression}+age")
            if plain is None or encrypted is None:
                continue
            ratio = encrypted.seconds / plain.seconds
            goal = ENCRYPTION_GOALS[compression]
            rows.append(
                [
                    f"{source['engine']} {source['size']} {unit}",
                    compression,
                    f"{plain.seconds:.2f}",
                    f"{encrypted.seconds:.2f}",
                    f"{ratio:.3f}",
                    f"{encrypted.rss_mib:.1f}",
                    f"<= {goal:.2f}: "
                    + (("met" if ratio <= goal else "**MISSED**") if checked else "for information"),
                ]
            )
    headers = [
        "source", "compression", "plain s", "+ age s", "+ age / plain", "+ age peak RSS MiB",
        "goal (issue 19, at each engine's largest size)",
    ]  # fmt: skip
    return [
        "### Encryption (age)",
        "",
        *_facts("encryption", meta, _rounds(counts), " The baseline is ours without encryption, same run."),
        "",
        *_table(headers, rows),
    ]


# -- restore jobs (restorejobsbench.py's plain dict) --------------------------------------------


def restore_jobs_section(data: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    base_side = "raw-1"
    rows = []
    for dataset in data.get("datasets", []):
        medians: dict[str, float] = dataset.get("medians", {})
        base = medians.get(base_side)
        for label, median in medians.items():
            if label == base_side:
                continue
            rows.append(
                [
                    str(dataset.get("name", "?")),
                    label,
                    _fmt(base),
                    f"{median:.2f}",
                    _fmt(median / base if base else None),
                    f"{dataset.get('peak_rss_kib', {}).get(label, 0) / 1024:.1f}",
                ]
            )
    try:
        from report_restorejobs import verdicts
    except ImportError:
        found: list[str] = []
    else:
        found = verdicts(data)
    rounds = _rounds({data["runs"]} if "runs" in data else set())
    headers = ["source", "side", "raw single job s", "side s", "side / raw", "peak RSS MiB"]
    return [
        "### PostgreSQL restores with `restore_jobs` (pg_restore -j)",
        "",
        *_facts(
            "restore-jobs", meta, rounds, " The raw pipeline is `gunzip -c f | pg_restore -d NEW` (one job)."
        ),
        "",
        *_table(headers, rows),
        "",
        *found,
    ]


# -- the block ----------------------------------------------------------------------------------

OTHERS = (  # engines without a raw pipeline to compare with: a link each
    ("retention", "retention planning (in-process `plan()`)"),
    ("admin", "admin pages on a catalog of a million backups"),
    ("schedules", "schedule load (many targets due in one minute)"),
)


def _machine_line(metas: list[dict[str, Any]]) -> str:
    machines = {
        (m.get("nproc"), m.get("CPU"), m.get("RAM"), m.get("kernel"))
        for meta in metas
        if (m := meta.get("machine"))
    }
    if not machines:
        return "Machine: not recorded in the saved results."
    texts = [
        f"{n} CPUs ({cpu}), {ram} RAM, Linux {kernel}" for n, cpu, ram, kernel in sorted(machines, key=str)
    ]
    more = " (the engines ran on different machines!)" if len(texts) > 1 else ""
    return f"Machine: {'; '.join(texts)}{more}."


def build(results: Path) -> str:
    """The whole Summary block, markers included, from the files saved under ``results``."""
    sections: list[list[str]] = []
    metas: list[dict[str, Any]] = []
    for key in ("sqlite", "postgresql", "mariadb"):
        loaded = _load(results, key)
        if loaded is None:
            continue
        data, meta = loaded
        metas.append(meta)
        sections.append(
            sqlite_section(data, meta) if key == "sqlite" else server_section(engine_result(data), meta)
        )
    builders = (
        ("storages", storages_section),
        ("encryption", encryption_section),
        ("restore-jobs", restore_jobs_section),
    )
    for key, builder in builders:
        loaded = _load(results, key)
        if loaded is not None:
            metas.append(loaded[1])
            sections.append(builder(*loaded))
    others = []
    for key, what in OTHERS:
        loaded = _load(results, key)
        if loaded is None:
            continue
        metas.append(loaded[1])
        date = loaded[1].get("machine", {}).get("date", "date not recorded")
        heading = HEADINGS.get(key, "")
        where = f"[its block]({anchor(heading)})" if heading else f"its `bench:begin {key}` block"
        others.append(f"- {what}: {where} (run {date}).")
    where = str(results.relative_to(ROOT)) if results.is_relative_to(ROOT) else str(results)
    rebuild = {
        "bench/work": "; rebuild with `bench/run.py --summary-only`",
        "bench/work/quick": "; rebuild with `bench/run.py --summary-only --quick`",
    }.get(where, "")
    lines = [
        begin_marker(KEY),
        "## Summary: ours side by side with the raw tools and django-dbbackup",
        "",
        f"Generated by `bench/run.py` from the saved results (`{where}/results-*.json`{rebuild}). Times are medians of wall time over the timed runs "
        "(after untimed warm-up runs), each side interleaved with the others in the same run; a "
        "ratio is ours / the other side's median of the same size, below 1 means ours is faster. "
        "Peak RSS is ours, `ru_maxrss` (the tools it starts included), the highest over the timed "
        "runs. A database goal is checked at pgbench scale 50 and above (the issue's figures are for "
        "scale 50); smaller scales are for information. Each engine's block below has the method, every "
        "side, the per-process memory and the verdicts.",
        "",
        _machine_line(metas),
        "",
    ]
    if not sections and not others:
        lines += ["No saved results yet: run `make bench` (or `bench/run.py --engines ...`).", ""]
    for section in sections:
        lines += [*section, ""]
    if others:
        lines += ["### Other engines (no raw pipeline to compare with)", "", *others, ""]
    lines.append(end_marker(KEY))
    return "\n".join(lines)


def write(path: Path, block: str) -> None:
    """Put the block between its markers, or, the first time, right under the file's title."""
    begin, end = begin_marker(KEY), end_marker(KEY)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        title, newline, rest = text.partition("\n")
        text = f"{title}{newline}\n{block}\n\n{rest.lstrip(chr(10))}"
    path.write_text(text)
