"""Summarise the storage upload runs: medians, ratios, a console table and the ``storages`` block
of bench/RESULTS.md (``bench:begin storages`` / ``bench:end storages`` markers)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from report_servers import begin_marker, end_marker, replace_block, run_header
from storagebench import OURS_CALL, RAW_CALLS, Run, StorageResult

MIB = 1024 * 1024
KEY = "storages"


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def seconds(runs: list[Run]) -> float:
    return _median([r.seconds for r in runs])


def with_confirm(runs: list[Run]) -> float:
    return _median([r.seconds + r.confirm_seconds for r in runs])


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _rate(size: int, secs: float) -> str:
    return f"{size / MIB / secs:.0f}" if secs > 0 else "-"


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(headers), "|" + "|".join("---:" for _ in headers) + "|", *(line(row) for row in rows)]


def upload_rows(result: StorageResult) -> list[list[str]]:
    size, rows = result.size_bytes, []
    for kind in result.kinds:
        raw, ours = result.runs[f"raw-{kind}"], result.runs[f"ours-{kind}"]
        raw_s, ours_s, both = seconds(raw), seconds(ours), with_confirm(ours)
        confirm = _median([r.confirm_seconds for r in ours])
        rows.append(
            [
                kind,
                f"{raw_s:.2f}",
                _rate(size, raw_s),
                f"{ours_s:.2f}",
                _rate(size, ours_s),
                f"{ours_s / raw_s:.2f}",
                f"{both:.2f}",
                f"{both / raw_s:.2f}",
                f"{confirm:.2f} ({_rate(size, confirm)} MiB/s)",
            ]
        )
    return rows


UPLOAD_HEADERS = [
    "kind", "raw s", "raw MiB/s", "ours s", "ours MiB/s", "ratio",
    "ours + confirm s", "ratio", "confirm alone s",
]  # fmt: skip


def rss_rows(result: StorageResult) -> list[list[str]]:
    rows = []
    for kind in result.kinds:
        raw, ours = result.runs[f"raw-{kind}"], result.runs[f"ours-{kind}"]
        rows.append(
            [
                kind,
                _mib(max(r.ready_kib for r in raw)),
                _mib(max(r.hwm_kib for r in raw)),
                _mib(max(r.ready_kib for r in ours)),
                _mib(max(r.hwm_upload_kib for r in ours)),
                _mib(max(r.hwm_kib for r in ours)),
                _mib(max(r.maxrss_kib for r in raw)),
                _mib(max(r.maxrss_kib for r in ours)),
            ]
        )
    return rows


def buffer_bound(kind: str, settings: dict[str, Any]) -> str | None:
    """What our writer of ``kind`` holds at most with ``settings`` (the storages' docstrings)."""
    if kind in ("s3", "azure") and settings:
        size = settings.get("part_size_mib", settings.get("block_size_mib"))
        concurrency = settings["upload_concurrency"]
        unit = "parts" if kind == "s3" else "blocks"
        return f"{kind} ({concurrency} + 1) {unit} x {size} MiB = {(concurrency + 1) * size} MiB"
    if kind == "gcs" and settings:
        return f"gcs one {settings['upload_chunk_mib']} MiB chunk"
    return None


def settings_lines(result: StorageResult) -> list[str]:
    """The upload settings our storages ran with and the buffers they bound (older results have none)."""
    given = {kind: result.settings[kind] for kind in result.kinds if result.settings.get(kind)}
    if not given:
        return []
    bounds = [bound for kind in given if (bound := buffer_bound(kind, given[kind]))]
    return [
        "Upload settings of ours in effect (defaults included): "
        + "; ".join(f"{kind} `{json.dumps(settings)}`" for kind, settings in given.items())
        + (". Upload buffers held at most, per copy: " + "; ".join(bounds) + "." if bounds else "."),
    ]


RSS_HEADERS = [
    "kind", "raw: after imports", "raw: peak", "ours: after imports", "ours: peak, upload",
    "ours: peak, with confirm", "raw ru_maxrss", "ours ru_maxrss",
]  # fmt: skip


def fanout_summary(result: StorageResult) -> dict[str, float] | None:
    if not result.fanout or "fanout" not in result.runs:
        return None
    runs = result.runs["fanout"]
    singles = {kind: seconds(result.runs[f"ours-{kind}"]) for kind in result.fanout}
    confirmed = {kind: with_confirm(result.runs[f"ours-{kind}"]) for kind in result.fanout}
    summary = {
        "fanout": seconds(runs),
        "fanout_confirm": with_confirm(runs),
        "sum": sum(singles.values()),
        "max": max(singles.values()),
        "sum_confirm": sum(confirmed.values()),
        "max_confirm": max(confirmed.values()),
        "rss": max(r.hwm_kib for r in runs) / 1024,
        "rss_upload": max(r.hwm_upload_kib for r in runs) / 1024,
        "ready": max(r.ready_kib for r in runs) / 1024,
        "maxrss": max(r.maxrss_kib for r in runs) / 1024,
    }
    for kind in result.fanout:
        summary[f"done-{kind}"] = _median([r.extra[kind] for r in runs])
        summary[f"single-{kind}"] = singles[kind]
    return summary


def fanout_lines(result: StorageResult) -> list[str]:
    f = fanout_summary(result)
    if f is None:
        return [f"Fan-out not measured: {result.skipped.get('fan-out', 'not selected')}."]
    names = " + ".join(result.fanout)
    singles = ", ".join(f"{kind} {f[f'single-{kind}']:.2f} s" for kind in result.fanout)
    done = ", ".join(f"{kind} at {f[f'done-{kind}']:.2f} s" for kind in result.fanout)
    rows = [
        ["fan-out: one stream into " + names + ", every copy committed", f"{f['fanout']:.2f}", "1.00"],
        [f"sum of the single uploads ({singles})", f"{f['sum']:.2f}", f"{f['fanout'] / f['sum']:.2f}"],
        ["max of the single uploads", f"{f['max']:.2f}", f"{f['fanout'] / f['max']:.2f}"],
        ["fan-out + confirms (in parallel, as a backup does)", f"{f['fanout_confirm']:.2f}", ""],
        [
            "sum of the single uploads + confirms",
            f"{f['sum_confirm']:.2f}",
            f"{f['fanout_confirm'] / f['sum_confirm']:.2f}",
        ],
        ["max of the single uploads + confirms", f"{f['max_confirm']:.2f}", f"{f['fanout_confirm'] / f['max_confirm']:.2f}"],
    ]  # fmt: skip
    return [
        *_md_table(["", "median s", "fan-out / this"], rows),
        "",
        f"Each destination's commit returned (medians, from the start of the stream): {done}. "
        f"Peak RSS of the fan-out process: {f['rss_upload']:.1f} MiB after the uploads, "
        f"{f['rss']:.1f} MiB with the confirms ({f['ready']:.1f} MiB after imports; "
        f"ru_maxrss {f['maxrss']:.1f} MiB).",
    ]


def details_rows(result: StorageResult) -> list[list[str]]:
    rows = []
    for label, runs in result.runs.items():
        rows.append(
            [
                label,
                f"{seconds(runs):.2f}",
                f"{min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f}",
                f"{_median([r.confirm_seconds for r in runs]):.2f}" if runs[0].confirm_seconds else "-",
                f"{_median([r.wall_seconds for r in runs]):.2f}",
                f"{_median([r.wall_seconds - r.seconds - r.confirm_seconds for r in runs]):.2f}",
            ]
        )
    return rows


DETAILS_HEADERS = [
    "side", "median s", "min-max s", "confirm s", "process wall s", "start-up, imports, cleanup s",
]  # fmt: skip


def console_table(result: StorageResult) -> str:
    rows = [UPLOAD_HEADERS, *upload_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(UPLOAD_HEADERS))]
    lines = [f"Storages: {result.size_bytes / MIB:.0f} MiB upload ({result.seconds / 60:.1f} min)"]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(2, "  ".join("-" * width for width in widths))
    lines.append("")
    rss = [RSS_HEADERS, *rss_rows(result)]
    widths = [max(len(row[i]) for row in rss) for i in range(len(RSS_HEADERS))]
    lines.append("Peak RSS, MiB (VmHWM of each child, and ru_maxrss)")
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rss]
    lines += [line for text in settings_lines(result) for line in ("", text)]
    f = fanout_summary(result)
    if f is not None:
        lines += [
            "",
            f"fan-out {' + '.join(result.fanout)}: {f['fanout']:.2f} s; sum of singles {f['sum']:.2f} s "
            f"({f['fanout'] / f['sum']:.2f}x), max {f['max']:.2f} s ({f['fanout'] / f['max']:.2f}x); "
            f"with confirms {f['fanout_confirm']:.2f} s vs sum {f['sum_confirm']:.2f} s; "
            f"peak RSS {f['rss']:.1f} MiB",
        ]
    return "\n".join(lines)


def _method(result: StorageResult, runs: int, warmup: int) -> str:
    size = result.size_bytes / MIB
    return (
        f"Method: one {size:.0f} MiB file of `os.urandom` bytes (incompressible; SHA-256 "
        f"{result.sha256[:16]}...), in the page cache, uploaded to each kind's loopback test server "
        "(`tests/servers`), which runs on the same machine and competes for its CPUs. "
        f"{warmup} untimed warm-up round(s) uploading a {result.warmup_bytes / MIB:.0f} MiB file "
        "(it exercises the servers, imports and connections; a full-size warm-up would add ~3.5 min), "
        f"then {runs} timed rounds of the {size:.0f} MiB file; in each round every side "
        "runs once, in the order of the details table, each in its own child process "
        "(`storagebench.py child`), so drift on the machine hits every side alike. "
        "**Timed**: inside the child, from before the client or storage is built (connect, TLS, "
        "login included) until the upload is complete (raw: the library call returned; ours: "
        "`commit()` returned), with the clock started after the imports; interpreter start-up "
        "and imports are in the process wall time (details table) and in neither side's seconds. "
        "Ours is fed 1 MiB chunks straight from the file: no compression, no hashing (the SHA-256 "
        "that `confirm` checks against was computed once, beforehand). **Confirm** is timed apart "
        "in the same child: `storage.confirm(path, size, sha256)`, which asks for the size and "
        "re-reads and hashes the whole object. Ratio = median / median of the raw client on the "
        "same server in the same run. Each child deletes what it uploaded after its clock stopped, "
        "so the servers hold at most one benchmark object at a time. "
        "**Fan-out**: one child builds local, s3 and sftp storages, opens a writer in each with a "
        "`backups.streaming.pipeline.BackgroundWriter` (a thread behind a 4-chunk queue) per destination, "
        "feeds every chunk to each, then finishes and commits them one after the other "
        "(`backups.runs.destinations.FanOut`), and confirms the copies in parallel (`backups.runs.destinations.confirm_all`); "
        "compared with the same run's single-destination uploads. "
        "**RSS**: each child reads its own VmHWM from /proc/self/status after the upload and "
        "again after the confirm (its peak, whatever the parent's polling interval), and its "
        "VmRSS after imports; ru_maxrss (os.wait4) is also given, but its floor is the benchmark "
        "process's resident pages at fork (the launch floor). The raw clients use their "
        "libraries' defaults; our storages get the test plugins' options (`tests/plugins`), "
        "except where the Options line says otherwise."
    )


def markdown_block(result: StorageResult, machine: dict[str, str], runs: int, warmup: int) -> str:
    m = machine
    lines = [
        begin_marker(KEY),
        "## Storages: upload throughput, latest run",
        "",
        run_header(m, result.seconds / 60, result.load),
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in result.versions.items()),
        "",
        f"### Upload of a {result.size_bytes / MIB:.0f} MiB file, medians of {runs} runs",
        "",
        *_md_table(UPLOAD_HEADERS, upload_rows(result)),
        "",
        "### Peak RSS, MiB",
        "",
        'VmHWM of each child process (its own peak); "after imports" is its VmRSS when its clock '
        "started (ours: Django set up, the kind's module and SDK imported). Highest over the timed runs.",
        "",
        *_md_table(RSS_HEADERS, rss_rows(result)),
        "",
        *(line for text in settings_lines(result) for line in (text, "")),
        "### Fan-out: one stream, several copies at once",
        "",
        *fanout_lines(result),
        "",
        "### Details",
        "",
        *_md_table(DETAILS_HEADERS, details_rows(result)),
        "",
        "### Commands",
        "",
        "Every side is one child process: "
        f"`{result.child_argv}` (a 0600 JSON file: the side, the kind, the server's options). Inside it:",
        "",
        "```python",
        *(f"# raw {kind}\n{RAW_CALLS[kind]}" for kind in result.kinds),
        f"# ours (every kind)\n{OURS_CALL}",
        "```",
        "",
        "Options of our storages (secrets masked): "
        + "; ".join(f"{kind} `{json.dumps(result.options[kind])}`" for kind in result.kinds)
        + ". gcs: the test plugin's options without its 10 s `timeout_seconds`; azure: without its "
        "1 MiB `block_size_mib` (the production default, 8 MiB, is measured) and 10 s timeout.",
        "",
        "Reproduce: `.venv/bin/python bench/run.py --engines storages "
        f"--storages {','.join(result.kinds)} --storage-mib {result.size_bytes // MIB} "
        f"--storage-warmup-mib {result.warmup_bytes // MIB} --runs {runs} --warmup {warmup}`.",
        "",
        _method(result, runs, warmup),
        "",
        end_marker(KEY),
    ]
    return "\n".join(lines)


def write_markdown(
    path: Path, result: StorageResult, machine: dict[str, str], runs: int, warmup: int
) -> None:
    """Replace the storages block of RESULTS.md (appended if it has none yet)."""
    replace_block(path, KEY, markdown_block(result, machine, runs, warmup))
