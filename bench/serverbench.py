"""Measure one database server engine: raw tools vs. ours vs. django-dbbackup, backup and restore.

Per scale, after untimed warm-up rounds, every round runs each side once, interleaved so drift
on the machine hits every side alike:

    backup:  raw dump | gzip -6 > file, ours gzip, (PostgreSQL: ours gzip without row counts),
             raw dump | zstd -3 > file, ours zstd, the dump tool alone (| cat > /dev/null: the
             floor), django-dbbackup -z
    restore: gunzip -c file | raw client NEW, ours from the gzip backup, ours from the zstd
             backup, ours creating the database, django-dbbackup dbrestore -z

Restores go into a database (``bench_restore``) that is dropped before and after each run and
created empty before the clock starts (every side restores into it the same way), except for
``ours-restore-create``, which creates it itself, inside its time. After every restore the row counts of the four tables
are compared with the source (untimed), so a restore that silently did nothing cannot look fast.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dbbackup_runner import DbBackup
from measure import ROOT, BenchError, Ours, Sample, _check, manage_argv, run_pipeline
from servers import RESTORE_DATABASE, Flavour, clean_env, running, source_database
from warm import WarmOurs

GZIP = ["gzip", "-6"]
ZSTD = ["zstd", "-3", "-q", "-c"]
GUNZIP = ["gunzip", "-c"]
# The floor: the dump tool writing into a pipe that a trivial consumer empties into /dev/null.
# Not `> /dev/null` directly: every real consumer (ours, gzip, zstd) reads the dump from a pipe,
# and pg_dump -Fc treats /dev/null as a seekable file (it goes back to rewrite the table of
# contents), so the pipe is the cost no streaming backup can avoid (README: "The dump floor").
DISCARD = ["cat"]
# Sides that vary one of ours (no row counts, creating the database, exact restore checks): in
# the engine's block, not in the Summary; --quick leaves them out.
VARIANTS = ("ours-gzip-nocount", "ours-zstd-nocount-warm", "ours-restore-create", "ours-restore-exact")


@dataclass
class ScaleResult:
    scale: int
    database_bytes: int
    rows: dict[str, int]
    generate_seconds: float
    samples: dict[str, list[Sample]]
    verified_counts: dict[str, bool] = field(default_factory=dict)  # restore source -> counts checked


@dataclass
class EngineResult:
    key: str
    title: str
    versions: dict[str, str]
    scales: list[ScaleResult] = field(default_factory=list)
    seconds: float = 0.0
    commands: dict[str, str] = field(default_factory=dict)
    startup: list[Sample] = field(default_factory=list)  # `backup_list --json`: our fixed cost
    load: list[str] = field(default_factory=list)  # /proc/loadavg at the start and at the end


def target_name(key: str, scale: int, variant: str) -> str:
    return f"{key}-{scale}-{variant}"


def ours_targets(flavour: Flavour, scales: list[int]) -> list[str]:
    blocks = []
    for scale in scales:
        database = source_database(scale)
        name = lambda variant: target_name(flavour.key, scale, variant)  # noqa: E731, B023
        blocks += [
            flavour.target(name("gzip"), database, "gzip", "bench"),
            flavour.target(name("zstd"), database, "zstd", "bench"),
            flavour.target(name("keep-gzip"), database, "gzip", "keep"),
            flavour.target(name("keep-zstd"), database, "zstd", "keep"),
        ]
        if flavour.key == "postgresql":
            blocks.append(flavour.target(name("gzip-nocount"), database, "gzip", "bench", row_counts=False))
            blocks.append(flavour.target(name("zstd-nocount"), database, "zstd", "bench", row_counts=False))
    blocks.append(flavour.target(f"{flavour.key}-restore", RESTORE_DATABASE, "gzip", "bench"))
    if flavour.key == "postgresql":
        blocks.append(
            flavour.target(
                f"{flavour.key}-restore-exact", RESTORE_DATABASE, "gzip", "bench", restore_check="exact"
            )
        )
    return blocks


class RawTools:
    """``dump DB | gzip -6 > file`` (or ``| zstd -3``, or ``| cat > /dev/null``, the floor) and
    ``gunzip -c file | client NEW``: two processes and a pipe."""

    def __init__(self, flavour: Flavour, work: Path, logs: Path) -> None:
        self.flavour, self.work, self.logs = flavour, work, logs
        work.mkdir(parents=True, exist_ok=True)

    def dump(self, database: str, out: Path, label: str, consumer: list[str] = GZIP) -> Sample:
        """``dump DB | CONSUMER > out``, timed from launch to the exit of the last process."""
        log = self.logs / f"{label}.stderr"
        with open(out, "wb") as sink, open(log, "wb") as err:
            dump, second, seconds = run_pipeline(
                self.flavour.dump_argv(database),
                consumer,
                stdout=sink,
                stderr=err,
                env=self.flavour.tool_env(),
            )
        _check(dump, log)
        _check(second, log)
        return Sample(
            label=label,
            seconds=seconds,
            peak_rss_kib=max(dump.maxrss_kib, second.maxrss_kib),
            raw_bytes=0,
            stored_bytes=out.stat().st_size if out.is_file() else 0,
            processes={Path(dump.argv[0]).name: dump, consumer[0]: second},
        )

    def backup(self, database: str, label: str, consumer: list[str] = GZIP) -> Sample:
        """A timed raw backup whose file is deleted afterwards (``DISCARD``: into /dev/null)."""
        out = Path(os.devnull) if consumer == DISCARD else self.work / f"out.{consumer[0]}"
        try:
            return self.dump(database, out, label, consumer)
        finally:
            if out != Path(os.devnull):
                out.unlink(missing_ok=True)

    def restore(self, source: Path, database: str, label: str) -> Sample:
        log = self.logs / f"{label}.stderr"
        with open(log, "wb") as err:
            gunzip, load, seconds = run_pipeline(
                [*GUNZIP, str(source)],
                self.flavour.load_argv(database),
                stdout=err,
                stderr=err,
                env=self.flavour.tool_env(),
            )
        _check(gunzip, log)
        _check(load, log)
        return Sample(
            label=label,
            seconds=seconds,
            peak_rss_kib=max(gunzip.maxrss_kib, load.maxrss_kib),
            raw_bytes=0,
            stored_bytes=source.stat().st_size,
            processes={"gunzip": gunzip, Path(load.argv[0]).name: load},
        )


def measure_engine(
    key: str,
    scales: list[int],
    runs: int,
    warmup: int,
    work: Path,
    logs: Path,
    dbbackup: DbBackup | None,
    variants: bool = True,
) -> EngineResult:
    """Every side at every scale; ``variants=False`` (``--quick``) leaves out ``VARIANTS``, the
    sides no Summary row or goal reads."""
    started = time.perf_counter()
    load = [_loadavg()]
    with running(key, work) as flavour:
        result = EngineResult(key=flavour.key, title=flavour.title, versions=flavour.versions())
        print(f"{flavour.title} server up on port {flavour.server.port}", flush=True)
        generated = {}
        for scale in scales:
            began = time.perf_counter()
            print(f"  generating scale {scale} ...", flush=True)
            flavour.generate(source_database(scale), scale)
            generated[scale] = time.perf_counter() - began
        ours = Ours(work / f"home-{key}", logs, flavour.secret_env())
        print(f"  setting up a throwaway BACKUPSITE_HOME under bench/work/home-{key} ...", flush=True)
        ours.setup(ours_targets(flavour, scales), probe=False)
        result.startup = [ours.startup() for _ in range(runs + 1)][1:]
        raw = RawTools(flavour, work / f"raw-{key}", logs)
        for scale in scales:
            database = source_database(scale)
            rows = flavour.counts(database)
            print(f"  measuring scale {scale} ({rows['pgbench_accounts']} accounts) ...", flush=True)
            samples, verified = _measure_scale(
                flavour, scale, rows, ours, raw, dbbackup, runs, warmup, variants
            )
            result.scales.append(
                ScaleResult(
                    scale, flavour.database_bytes(database), rows, generated[scale], samples, verified
                )
            )
        result.commands = _commands(flavour, max(scales), raw, ours, dbbackup)
    result.seconds = time.perf_counter() - started
    result.load = [*load, _loadavg()]
    return result


def _loadavg() -> str:
    """1, 5 and 15 minute load averages: others share this machine, and this shows how much."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _measure_scale(
    flavour: Flavour,
    scale: int,
    rows: dict[str, int],
    ours: Ours,
    raw: RawTools,
    dbbackup: DbBackup | None,
    runs: int,
    warmup: int,
    variants: bool = True,
) -> tuple[dict[str, list[Sample]], dict[str, bool]]:
    key, database = flavour.key, source_database(scale)
    # The restore sources, made once (untimed).
    flavour.settle()
    raw_file = raw.work / f"source-{scale}.gz"
    raw.dump(database, raw_file, "raw-prepare")
    _, kept_gzip = ours.backup(target_name(key, scale, "keep-gzip"))
    _, kept_zstd = ours.backup(target_name(key, scale, "keep-zstd"))
    verified = {
        label: counts_are_exact(ours.keep / target_name(key, scale, variant))
        for label, variant in (("ours-restore", "keep-gzip"), ("ours-restore-zstd", "keep-zstd"))
    }
    verified["ours-restore-create"] = verified["ours-restore"]
    if key == "postgresql":
        verified["ours-restore-exact"] = verified["ours-restore"]
    source_env = clean_env(flavour.django_env(database))
    restore_env = clean_env(flavour.django_env(RESTORE_DATABASE))
    if dbbackup is not None:
        dbbackup.prepare(source_env)

    def restored(action: Callable[[], Sample], create: bool) -> Callable[[], Sample]:
        def run() -> Sample:
            flavour.drop_database(RESTORE_DATABASE)
            if create:
                flavour.fresh_database(RESTORE_DATABASE)
            # The previous side's restore and DROP leave hundreds of MiB of dirty pages that the
            # kernel writes back in the background: flush them now, untimed, so that no side pays
            # for the one before it.
            os.sync()
            try:
                sample = action()
                found = flavour.counts(RESTORE_DATABASE)
                if found != rows:
                    raise BenchError(f"{sample.label}: restored row counts {found}, the source has {rows}")
                return sample
            finally:
                flavour.drop_database(RESTORE_DATABASE)

        return run

    restore_target = f"{key}-restore"
    warm = WarmOurs(ours.home, ours.logs, ours.env)
    actions: dict[str, Callable[[], Sample]] = {
        "raw-gzip": lambda: raw.backup(database, "raw-gzip"),
        "ours-gzip": lambda: ours.run(target_name(key, scale, "gzip"), "ours-gzip"),
    }
    if key == "postgresql":
        actions["ours-gzip-nocount"] = lambda: ours.run(
            target_name(key, scale, "gzip-nocount"), "ours-gzip-nocount"
        )
    actions["raw-zstd"] = lambda: raw.backup(database, "raw-zstd", ZSTD)
    actions["ours-zstd"] = lambda: ours.run(target_name(key, scale, "zstd"), "ours-zstd")
    actions["raw-dump"] = lambda: raw.backup(database, "raw-dump", DISCARD)
    # The same backups in a warm process, as a worker runs them (bench/warm.py): no start-up.
    actions["ours-gzip-warm"] = lambda: warm.run(ours, target_name(key, scale, "gzip"), "ours-gzip-warm")
    actions["ours-zstd-warm"] = lambda: warm.run(ours, target_name(key, scale, "zstd"), "ours-zstd-warm")
    if key == "postgresql":  # the zstd path alone: without the row counts' second scan on the server
        actions["ours-zstd-nocount-warm"] = lambda: warm.run(
            ours, target_name(key, scale, "zstd-nocount"), "ours-zstd-nocount-warm"
        )
    if dbbackup is not None:
        actions["dbbackup"] = lambda: dbbackup.backup(source_env, "dbbackup")
    actions["raw-restore"] = restored(lambda: raw.restore(raw_file, RESTORE_DATABASE, "raw-restore"), True)
    # Like the raw tools, ours restores into an empty database created just before its clock
    # starts; "ours-restore-create" also times creating it (what a restore to a new name does).
    actions["ours-restore"] = restored(lambda: ours.restore(kept_gzip, restore_target, "ours-restore"), True)
    actions["ours-restore-zstd"] = restored(
        lambda: ours.restore(kept_zstd, restore_target, "ours-restore-zstd"), True
    )
    actions["ours-restore-warm"] = restored(
        lambda: warm.restore_sample(kept_gzip, restore_target, "ours-restore-warm"), True
    )
    actions["ours-restore-create"] = restored(
        lambda: ours.restore(kept_gzip, restore_target, "ours-restore-create"), False
    )
    if key == "postgresql":
        actions["ours-restore-exact"] = restored(
            lambda: ours.restore(kept_gzip, f"{key}-restore-exact", "ours-restore-exact"), True
        )
    if dbbackup is not None:
        actions["dbbackup-restore"] = restored(
            lambda: dbbackup.restore(restore_env, "dbbackup-restore"), True
        )

    if not variants:
        for label in VARIANTS:
            actions.pop(label, None)
            verified.pop(label, None)

    verified["ours-restore-warm"] = verified["ours-restore"]
    try:
        for round_ in range(warmup):
            for action in actions.values():
                _show(key, scale, f"warm-up {round_ + 1}/{warmup}", action())
        samples: dict[str, list[Sample]] = {label: [] for label in actions}
        for round_ in range(runs):
            for label, action in actions.items():
                sample = action()
                samples[label].append(sample)
                _show(key, scale, f"run {round_ + 1}/{runs}", sample)
    finally:
        warm.stop()
    raw_file.unlink(missing_ok=True)
    return samples, verified


def counts_are_exact(directory: Path) -> bool:
    """Whether the kept backup's manifest has exact row counts, which our restore then checks."""
    manifests = list(directory.rglob("*.manifest.json"))
    if len(manifests) != 1:
        raise BenchError(f"expected one manifest under {directory}, found {len(manifests)}")
    info = json.loads(manifests[0].read_text()).get("engine_info") or {}
    return bool(info.get("row_counts_exact"))


def _show(key: str, scale: int, when: str, sample: Sample) -> None:
    print(
        f"  [{key} s{scale}] {when:<12} {sample.label:<18} {sample.seconds:7.2f}s  "
        f"peak RSS {sample.peak_rss_kib / 1024:6.1f} MiB  stored {sample.stored_bytes / 2**20:7.1f} MiB",
        flush=True,
    )


def _display(argv: list[str]) -> str:
    return shlex.join(argv).replace(f"{ROOT}/", "")


def _commands(
    flavour: Flavour, scale: int, raw: RawTools, ours: Ours, dbbackup: DbBackup | None
) -> dict[str, str]:
    """The exact commands of the largest scale, for RESULTS.md (passwords masked)."""
    database, key = source_database(scale), flavour.key
    env = " ".join(
        f"{name}={'***' if 'PASSWORD' in name else value}"
        for name, value in flavour.tool_env().items()
        if name.startswith("PG")
    )
    prefix = f"{env} " if env else ""
    ours_env = (
        f"BACKUPSITE_HOME={_display([str(ours.home)])} DJANGO_SETTINGS_MODULE=backupsite.settings "
        f"{flavour.password_variable}=***"
    )
    commands = {
        "raw backup": f"{prefix}{_display(flavour.dump_argv(database))} | {_display(GZIP)} > "
        f"{_display([str(raw.work / 'out.gzip')])}",
        "raw backup zstd": f"{prefix}{_display(flavour.dump_argv(database))} | {_display(ZSTD)} > "
        f"{_display([str(raw.work / 'out.zstd')])}",
        "raw dump floor": f"{prefix}{_display(flavour.dump_argv(database))} | {_display(DISCARD)} > /dev/null",
        "raw restore": f"CREATE DATABASE {RESTORE_DATABASE}; then\n{prefix}"
        f"{_display([*GUNZIP, str(raw.work / f'source-{scale}.gz')])} | "
        f"{_display(flavour.load_argv(RESTORE_DATABASE))}",
        "ours backup": f"{ours_env} "
        f"{_display(manage_argv('backup_create', '--target', target_name(key, scale, 'gzip'), '--json'))}",
        "ours restore": f"{ours_env} "
        f"{_display(manage_argv('backup_restore', '--id', 'N', '--to', f'{key}-restore', '--yes', '--json'))}",
        "ours target": flavour.target(target_name(key, scale, "gzip"), database, "gzip", "bench"),
    }
    if dbbackup is not None:
        where = f"cd {_display([str(dbbackup.project)])} && BENCH_DB_ENGINE={flavour.django_engine} "
        commands["dbbackup backup"] = (
            f"{where}BENCH_DB_NAME={database} BENCH_DB_PASSWORD=*** ... {_display(dbbackup.argv('dbbackup', '-z'))}"
        )
        commands["dbbackup restore"] = (
            f"CREATE DATABASE {RESTORE_DATABASE}; then\n{where}BENCH_DB_NAME={RESTORE_DATABASE} "
            f"BENCH_DB_PASSWORD=*** ... {_display(dbbackup.argv('dbrestore', '-z', '--noinput'))}"
        )
    return commands
