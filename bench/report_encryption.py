"""Summarise the encryption runs: encrypted / plain ratios per compression, peak RSS, verdicts
against issue 19's goals, a console table and the ``encryption`` block of bench/RESULTS.md
(``bench:begin encryption`` / ``bench:end encryption`` markers)."""

from __future__ import annotations

import statistics
from pathlib import Path

from encryptionbench import COMPRESSIONS, KEY_NAME, EncryptionResult, SourceResult
from report import RSS_LIMIT_MIB
from report_servers import MACHINE_VERSIONS, Side, begin_marker, end_marker, replace_block, run_header, side

KEY = "encryption"
MIB = 1024 * 1024
GOALS = {"gzip": 1.05, "zstd": 1.15}  # encrypted / plain wall time, at the issue's sizes
ISSUE_SIZES = {"sqlite": 1024, "postgresql": 50}  # MiB / pgbench scale


def sides(source: SourceResult) -> dict[str, Side]:
    return {label: side(samples) for label, samples in source.samples.items()}


def ratio(source: SourceResult, compression: str) -> float:
    """Median wall time encrypted / median plain, the same run."""
    by = sides(source)
    return by[f"{compression}+age"].seconds / by[compression].seconds


def paired_ratio(source: SourceResult, compression: str) -> float:
    """Median over the timed rounds of encrypted / plain within a round (each pair ran back to
    back, so drift between rounds cancels)."""
    plain, encrypted = source.samples[compression], source.samples[f"{compression}+age"]
    return float(statistics.median(e.seconds / p.seconds for p, e in zip(plain, encrypted, strict=True)))


def grows(before: float, after: float) -> bool:
    """The harness's rule for RSS that is not flat: more than max(8 MiB, 10 %) higher."""
    return after - before > max(8.0, 0.10 * before)


def verdicts(result: EncryptionResult) -> list[str]:
    """The issue's goals, checked one by one (bold where missed). The time goals are checked at
    each engine's largest size measured; smaller ones are for information (our fixed start-up
    cost weighs more on them)."""
    lines = []
    for engine in ("sqlite", "postgresql"):
        sources = [source for source in result.sources if source.engine == engine]
        if not sources:
            continue
        largest = sources[-1]
        for source in sources:
            checked = source is largest
            parts = []
            for compression in COMPRESSIONS:
                value, goal = ratio(source, compression), GOALS[compression]
                verdict = ("met" if value <= goal else "**MISSED**") if checked else "for information"
                parts.append(
                    f"{compression} + age {value:.3f}x plain {compression} (paired rounds "
                    f"{paired_ratio(source, compression):.3f}x; goal <= {goal:.2f}: {verdict})"
                )
            note = ""
            if checked and source.size != ISSUE_SIZES[engine]:
                issue = f"{ISSUE_SIZES[engine]} MiB" if engine == "sqlite" else f"scale {ISSUE_SIZES[engine]}"
                note = f" Measured below the issue's size ({issue}): indicative only."
            lines.append(f"- {source.title}: {'; '.join(parts)}.{note}")
    for source in result.sources:
        by = sides(source)
        parts = []
        for compression in COMPRESSIONS:
            before, after = by[compression].rss_mib, by[f"{compression}+age"].rss_mib
            shape = "**GROWS**" if grows(before, after) else "flat"
            parts.append(f"{compression} {before:.1f} -> {after:.1f} MiB ({after - before:+.1f}, {shape})")
        lines.append(f"- {source.title}: peak RSS plain -> encrypted: {'; '.join(parts)}.")
    highest = max(item.rss_mib for source in result.sources for item in sides(source).values())
    under = "under" if highest < RSS_LIMIT_MIB else "**NOT** under"
    lines.append(
        f"- Peak RSS of our process (ru_maxrss, every side and size): at most {highest:.1f} MiB, "
        f"{under} {RSS_LIMIT_MIB:.0f} MiB."
    )
    for engine in ("sqlite", "postgresql"):
        sources = [source for source in result.sources if source.engine == engine]
        if len(sources) < 2:
            continue
        small, big = sides(sources[0]), sides(sources[-1])
        for label in ("gzip+age", "zstd+age"):
            before, after = small[label].rss_mib, big[label].rss_mib
            lines.append(
                f"- {label} peak RSS {before:.1f} MiB at {sources[0].title} vs {after:.1f} MiB at "
                f"{sources[-1].title} ({after - before:+.1f} MiB): "
                f"{'**GROWS** with size' if grows(before, after) else 'flat'}."
            )
    checks = [check for source in result.sources for check in source.checks]
    lines.append(
        f"- Every checked backup decoded to its whole dump ({len(checks)} checks: the encrypted ones "
        "with Debian's `age -d`, all with the compressor's CLI; byte counts equal `raw_size`)."
    )
    return lines


HEADERS = [
    "source", "compression", "plain s", "+ age s", "ratio", "paired ratio", "goal",
    "plain RSS MiB", "+ age RSS MiB", "plain MiB stored", "+ age MiB stored",
]  # fmt: skip


def rows(result: EncryptionResult) -> list[list[str]]:
    out = []
    for source in result.sources:
        by = sides(source)
        for compression in COMPRESSIONS:
            plain, encrypted = by[compression], by[f"{compression}+age"]
            out.append(
                [
                    source.title,
                    compression,
                    f"{plain.seconds:.2f}",
                    f"{encrypted.seconds:.2f}",
                    f"{ratio(source, compression):.3f}",
                    f"{paired_ratio(source, compression):.3f}",
                    f"<= {GOALS[compression]:.2f}",
                    f"{plain.rss_mib:.1f}",
                    f"{encrypted.rss_mib:.1f}",
                    f"{plain.stored_mib:.1f}",
                    f"{encrypted.stored_mib:.1f}",
                ]
            )
    return out


def console_table(result: EncryptionResult) -> str:
    table = [HEADERS, *rows(result)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = [
        f"Encryption ({result.seconds / 60:.1f} min, {result.warmup} warm-up + {result.runs} timed rounds)"
    ]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in table]
    lines.insert(2, "  ".join("-" * width for width in widths))
    return "\n".join([*lines, "", *verdicts(result)])


def _printable(text: str) -> str:
    """``text`` with control characters as escapes (``SQLite format 3\\x00``): no raw NUL in the
    Markdown file."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(headers), "|" + "|".join("---:" for _ in headers) + "|", *(line(row) for row in rows)]


def _rss_rows(result: EncryptionResult) -> list[list[str]]:
    out = []
    for source in result.sources:
        for label, item in sides(source).items():
            children = ", ".join(f"{name} {mib:.1f}" for name, mib in sorted(item.children.items()))
            out.append([source.title, label, f"{item.rss_mib:.1f}", f"{item.own_mib:.1f}", children or "-"])
    return out


def _details(source: SourceResult) -> list[str]:
    by = sides(source)
    raw = source.checks[0].raw_bytes / MIB if source.checks else 0.0
    made = f"; generated in {source.prepare_seconds:.1f} s" if source.prepare_seconds else ""
    lines = [
        f"#### {source.title}: {source.source_bytes / MIB:.0f} MiB source, {raw:.0f} MiB dump{made}",
        "",
        *_md_table(
            ["side", "median s", "min-max s", "runs s", "file MiB"],
            [
                [
                    label,
                    f"{item.seconds:.2f}",
                    f"{item.low:.2f}-{item.high:.2f}",
                    ", ".join(f"{sample.seconds:.2f}" for sample in source.samples[label]),
                    f"{item.stored_mib:.1f}",
                ]
                for label, item in by.items()
            ],
        ),
        "",
        "Order of the timed rounds: " + "; ".join(", ".join(order) for order in source.orders) + ".",
        "",
    ]
    for label, item in by.items():
        text = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in item.steps.items())
        lines.append(
            f"- {label} steps recorded in the catalog (medians): {text}; outside the steps "
            f"(interpreter and Django start-up, bookkeeping) ~{item.seconds - sum(item.steps.values()):.2f}s."
        )
    lines += [
        "",
        "Checks (one untimed backup per target, before the warm-up):",
        "",
        *_md_table(
            ["side", "file", "stored bytes", "decoded bytes = raw_size", "starts", "decoded with"],
            [
                [
                    check.side,
                    f"`{check.file}`",
                    str(check.stored_bytes),
                    str(check.decoded_bytes),
                    f"`{_printable(check.content)}`",
                    f"`{check.command}`",
                ]
                for check in source.checks
            ],
        ),
        "",
    ]
    return lines


def _method(result: EncryptionResult) -> str:
    return (
        f"Method: per source, four targets that differ only in compression and encryption; the "
        f"encrypted ones name key `{KEY_NAME}` (X25519, generated once by `services.generate_key` "
        "into a 0600 file in a 0700 directory that only the children's BACKUPSITE_SECRETS_DIRS "
        "names; registered from its recipient in the PostgreSQL home, so both sources encrypt to the "
        "same key), and their pipeline is dump -> compress -> age (pyrage, in a thread) -> SHA-256 "
        "-> storage. Before timing, one untimed backup of every target is checked: the age header on "
        "the encrypted files (and not on the plain ones), the SHA-256 against the catalog, and "
        "`age -d -i KEY FILE | gzip -dc` (`zstd -dc -q`; plain files without `age`) exiting 0 with "
        "exactly the dump's `raw_size` bytes and the engine's own header; a failed check fails the "
        f"bench. Then {result.warmup} untimed warm-up round(s) and {result.runs} timed rounds of "
        "`backup_create`; plain and encrypted alternate, and which of a pair runs first flips every "
        "round (listed under each source), so neither side always follows the other. Ratio = median "
        "/ median of the same run; paired ratio = median of encrypted / plain within each round. "
        "Backups go to a local storage and are deleted after each run (fsync and the SHA-256 re-read "
        "included, as in every backup). Everything is in the page cache. Peak RSS: `ru_maxrss` from "
        "`os.wait4` (the process and the tools it reaped, e.g. pg_dump), the highest over the timed "
        'runs; VmHWM columns: each program\'s own peak, polled from /proc every 20 ms. "Flat": at '
        "most max(8 MiB, 10 %) above the plain side (the harness's rule for growth with size)."
    )


def markdown_block(result: EncryptionResult, machine: dict[str, str], command: str) -> str:
    m = machine
    versions = {k: m[k] for k in MACHINE_VERSIONS if k in m}
    versions.update(result.versions)
    c = result.commands
    lines = [
        begin_marker(KEY),
        "## Encryption (age): latest run",
        "",
        run_header(m, result.seconds / 60, result.load),
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        f"Command: `{command}`",
        "",
        "Set-up and measured commands (largest source of each engine; `***` = the password, only ever "
        "in the child's environment):",
        "",
        "```sh",
    ]
    for engine in ("sqlite", "postgresql"):
        if f"{engine} backup" not in c:
            continue
        lines += [
            f"# {engine}: the key and the encrypted targets (once, untimed)\n{c[f'{engine} keys']}",
            f"# {engine}: the timed backup (the plain twin is the same target without -age)\n"
            f"{c[f'{engine} backup']}",
        ]
    lines += [
        f"# the check of an encrypted gzip backup (untimed)\n{c.get('sqlite check') or c.get('postgresql check')}",
        "```",
        "",
    ]
    for engine in ("sqlite", "postgresql"):
        if f"{engine} target" in c:
            lines += [
                f'{engine} target (TOML, then `encryption = "{KEY_NAME}"` set by `services.rotate_key`):',
                "",
                "```toml",
                c[f"{engine} target"].rstrip(),
                "```",
                "",
            ]
    lines += [
        _method(result),
        "",
        "### Summary",
        "",
        *_md_table(HEADERS, rows(result)),
        "",
        "### Verdicts (generated)",
        "",
        *verdicts(result),
        "",
        "### Peak RSS",
        "",
        *_md_table(
            ["source", "side", "ru_maxrss MiB", "main process VmHWM MiB", "programs it started, VmHWM MiB"],
            _rss_rows(result),
        ),
        "",
        "### Details",
        "",
    ]
    for source in result.sources:
        lines += _details(source)
    lines.append(end_marker(KEY))
    return "\n".join(lines)


def write_markdown(path: Path, result: EncryptionResult, machine: dict[str, str], command: str) -> None:
    """Replace the encryption block of RESULTS.md (appended if it has none yet)."""
    replace_block(path, KEY, markdown_block(result, machine, command))
