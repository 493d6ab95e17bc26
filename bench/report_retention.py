"""Summarise the retention planning runs: a console table and the ``retention`` block of
bench/RESULTS.md (``bench:begin retention`` / ``bench:end retention`` markers)."""

from __future__ import annotations

import json
from pathlib import Path

from report_servers import begin_marker, end_marker, replace_block
from retentionbench import (
    CADENCE,
    NOW,
    POLICY,
    RULE_KINDS,
    TARGET_SECONDS,
    TARGET_SIZE,
    TIE_EVERY,
    TIMEZONE,
    VERIFIED_EVERY,
    WELL_UNDER,
    RetentionResult,
    SizeResult,
)

MIB = 1024 * 1024
KEY = "retention"
LINEAR_LIMIT = 2.0  # time per backup at the largest size / at the smallest: above this, not linear


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(headers), "|" + "|".join("---:" for _ in headers) + "|", *(line(row) for row in rows)]


HEADERS = [
    "backups", "history", "plan() median s", "min-max s", "us per backup", "per backup vs smallest",
    "full GCs per call", "traced peak MiB", "Plan holds MiB", "ru_maxrss before -> after MiB",
    "kept", "deleted",
]  # fmt: skip


def rows(result: RetentionResult) -> list[list[str]]:
    smallest = result.sizes[0].per_backup_us
    out = []
    for size in result.sizes:
        out.append(
            [
                f"{size.backups:,}".replace(",", " "),
                f"{size.span_days / 365.25:.2f} y",
                f"{size.median:.3f}",
                f"{min(size.seconds):.3f}-{max(size.seconds):.3f}",
                f"{size.per_backup_us:.2f}",
                f"{size.per_backup_us / smallest:.2f}",
                f"{size.gc_collections[2] / len(size.seconds):.1f}",
                f"{size.traced_peak_bytes / MIB:.1f}",
                f"{size.traced_result_bytes / MIB:.1f}",
                f"{size.maxrss_before_kib / 1024:.1f} -> {size.maxrss_after_kib / 1024:.1f}",
                str(size.kept),
                str(size.deleted),
            ]
        )
    return out


def console_table(result: RetentionResult) -> str:
    table = [HEADERS, *rows(result)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = [f"Retention planning ({result.seconds:.0f} s, {result.warmup} warm-up + {result.runs} runs)"]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in table]
    lines.insert(2, "  ".join("-" * width for width in widths))
    lines += ["", *verdicts(result)]
    return "\n".join(lines)


def _headline(result: RetentionResult) -> SizeResult | None:
    return next((size for size in result.sizes if size.backups == TARGET_SIZE), None)


def verdicts(result: RetentionResult) -> list[str]:
    lines = []
    size = _headline(result)
    if size is None:
        lines.append(f"- target: well under {TARGET_SECONDS:.0f} s for 100 000: not measured in this run")
    else:
        slowest = max(size.seconds)
        if size.median <= WELL_UNDER * TARGET_SECONDS and slowest < TARGET_SECONDS:
            verdict = "met"
        elif slowest < TARGET_SECONDS:
            verdict = (
                f"**BORDERLINE**: under {TARGET_SECONDS:.0f} s, but the median is over {WELL_UNDER:.0%} of it"
            )
        else:
            verdict = "**MISSED**"
        lines.append(
            f"- target: well under {TARGET_SECONDS:.0f} s for 100 000 (taken as a median of at most "
            f"{WELL_UNDER * TARGET_SECONDS:.1f} s and every run under {TARGET_SECONDS:.0f} s): {verdict}; "
            f"median {size.median:.3f} s ({size.median / TARGET_SECONDS:.0%} of the budget), "
            f"slowest {slowest:.3f} s."
        )
    if len(result.sizes) > 1:
        first, last = result.sizes[0], result.sizes[-1]
        ratio = last.per_backup_us / first.per_backup_us
        shape = "linear" if ratio <= LINEAR_LIMIT else "**NOT LINEAR**"
        per = ", ".join(f"{s.per_backup_us:.2f} us at {s.backups:,}".replace(",", " ") for s in result.sizes)
        lines.append(
            f"- scaling: {shape} (time per backup {per}; {ratio:.2f}x from the smallest to the largest, "
            f"limit {LINEAR_LIMIT:.1f}x)."
        )
        memory = ", ".join(
            f"{s.traced_peak_bytes / s.backups:.0f} B at {s.backups:,}".replace(",", " ")
            for s in result.sizes
        )
        lines.append(f"- traced peak memory of plan() per backup: {memory}.")
    reference = size or result.sizes[-1]
    fired = {**reference.kept_reasons, **reference.deleted_reasons}
    missing = [kind for kind in RULE_KINDS if kind not in fired]
    count = f"{reference.backups:,}".replace(",", " ")
    if missing:
        lines.append(f"- rule kinds: **{', '.join(missing)} decided nothing** at {count} backups.")
    else:
        lines.append(
            f"- rule kinds: every one of the {len(RULE_KINDS)} decided something at {count} backups."
        )
    lines.append(
        f"- checks: {len(reference.checks)} properties held for every size ({'; '.join(reference.checks)})."
    )
    return lines


def _reasons_rows(size: SizeResult) -> list[list[str]]:
    out = [
        [kind, str(size.kept_reasons.get(kind, 0)), str(size.deleted_reasons.get(kind, 0))]
        for kind in RULE_KINDS
    ]
    others = sorted(
        ({*size.kept_reasons, *size.deleted_reasons} - set(RULE_KINDS)),
        key=lambda kind: -(size.kept_reasons.get(kind, 0) + size.deleted_reasons.get(kind, 0)),
    )
    out += [
        [kind, str(size.kept_reasons.get(kind, 0)), str(size.deleted_reasons.get(kind, 0))] for kind in others
    ]
    return out


def _details_rows(result: RetentionResult) -> list[list[str]]:
    out = []
    for size in result.sizes:
        out.append(
            [
                f"{size.backups:,}".replace(",", " "),
                ", ".join(f"{n} {status}" for status, n in size.statuses.items()),
                str(size.ties),
                f"{size.build_seconds:.2f}",
                ", ".join(f"{s:.3f}" for s in size.warmup_seconds) or "-",
                ", ".join(f"{s:.3f}" for s in size.seconds),
                "/".join(str(n) for n in size.gc_collections),
                f"{size.rss_start_kib / 1024:.1f}",
                f"{size.rss_built_kib / 1024:.1f}",
                f"{size.hwm_after_kib / 1024:.1f}",
                f"{size.kept_successes} / {size.deleted_successes}",
            ]
        )
    return out


DETAILS_HEADERS = [
    "backups", "statuses", "equal-timestamp ties", "building them s", "warm-up s", "timed runs s",
    "GCs gen 0/1/2, all timed runs", "VmRSS after imports MiB", "VmRSS with the input MiB",
    "VmHWM after the timed runs MiB", "successes kept / deleted",
]  # fmt: skip


def markdown_block(result: RetentionResult, machine: dict[str, str], command: str) -> str:
    m = machine
    reference = _headline(result) or result.sizes[-1]
    sizes = ",".join(str(size.backups) for size in result.sizes)
    lines = [
        begin_marker(KEY),
        "## Retention planning: latest run",
        "",
        f"Date: {m['date']}. Code: commit {m['code']}. Machine: {m['nproc']} CPUs ({m['CPU']}), "
        f"{m['RAM']} RAM, Linux {m['kernel']}. This part of the run took {result.seconds:.0f} s; "
        f"load average (1/5/15 min) {' at the start, '.join(result.load)} at the end (the machine is "
        f"shared). Python {result.versions.get('python', '?')}. Launch floor (ru_maxrss of `true`): "
        f"{m.get('launch floor', '?')}.",
        "",
        f"Command: `{command}`",
        "",
        f"### `plan()` wall time and memory, {result.warmup} warm-up + {result.runs} timed calls per size",
        "",
        *_md_table(HEADERS, rows(result)),
        "",
        *verdicts(result),
        "",
        f"### What each rule decided ({reference.backups:,} backups)".replace(",", " "),
        "",
        "Kept: backups carrying at least one reason of that kind (a backup often carries several). "
        "Deleted: the reason the plan gives (a cap names itself; a backup past `retention_days` is "
        'reported as expired even when no rule kept it, so "no rule keeps it" counts only the newer '
        "ones).",
        "",
        *_md_table(["rule kind / reason", "kept", "deleted"], _reasons_rows(reference)),
        "",
        "### Details",
        "",
        *_md_table(DETAILS_HEADERS, _details_rows(result)),
        "",
        "### Data and policy",
        "",
        f"Backups: one every {CADENCE.total_seconds() / 60:.0f} minutes, each started 0-30 s late, the "
        f"newest at {NOW:%Y-%m-%d %H:%M} UTC (= `now`) and still running; about 5 % failed, 1 % skipped, "
        f"0.1 % corrupt and 0.02 % stale running; one success in {VERIFIED_EVERY} verified; a tie "
        f"every {TIE_EVERY} backups (one shares the timestamp of its newer neighbour). Timezone-aware UTC "
        "datetimes, passed newest first (the order `backups.cleanup` reads them in). A smaller set is "
        "the newest part of a larger one, so a larger size adds history, not density. "
        f"Policy (timezone {TIMEZONE}), every rule kind:",
        "",
        "```json",
        json.dumps(POLICY),
        "```",
        "",
        "Method: each size runs in its own child process, "
        f"`{result.child_argv}`, which builds the backups and "
        "`Policy.from_mapping(POLICY, timezone)`, then times `plan(backups, policy, now)` with "
        "`time.perf_counter` (the garbage collector on, as in production; the previous call's plan is "
        "freed before the clock starts). Memory: `ru_maxrss` (`resource.getrusage`) before the first "
        "call and after the last timed one; then, after those, one more call traced by `tracemalloc`: "
        "its peak (what `plan()` allocates on top of its input) and what is still allocated when it "
        "returns (the `Plan`: one `Kept`/`Deleted` per backup and their reasons). `ru_maxrss` starts "
        "from the launch floor (the pages copied from the benchmark process at fork), so VmHWM is "
        "also given. Untimed checks on every size's plan are listed above; a failed one fails the "
        f"bench. Reproduce: `.venv/bin/python bench/run.py --engines retention --retention-sizes "
        f"{sizes} --retention-runs {result.runs} --warmup {result.warmup}`.",
        "",
        end_marker(KEY),
    ]
    return "\n".join(lines)


def write_markdown(path: Path, result: RetentionResult, machine: dict[str, str], command: str) -> None:
    """Replace the retention block of RESULTS.md (appended if it has none yet)."""
    replace_block(path, KEY, markdown_block(result, machine, command))
