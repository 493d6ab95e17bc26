"""Issue 19's benchmark: what age encryption costs a backup, on the gzip and zstd paths.

    .venv/bin/python bench/run.py --engines encryption [--enc-sizes 1024] [--enc-pg-scales 50]
        [--runs 3] [--warmup 1]

Sources: the SQLite generator's cached databases (``--enc-sizes`` MiB) and pgbench databases
(``--enc-pg-scales``) in a throwaway PostgreSQL server (``servers.running``). Each source has
four targets in a throwaway BACKUPSITE_HOME: gzip, gzip + age, zstd, zstd + age. One key is
generated once (``services.generate_key``: a 0600 identity file in ``work/secrets``, the
directory the children get as BACKUPSITE_SECRETS_DIRS) and registered in the second home from
its recipient (``age-keygen -y``); ``services.rotate_key`` points the encrypted targets at it
(the ``keys`` child below, run in each home's environment). Encryption is a target's only
difference from its plain twin.

Before any timed run, one untimed backup of every target is checked: an encrypted file starts
with the age header and a plain one does not, its SHA-256 is the catalog's checksum, and
``age -d -i KEY FILE | gzip -dc`` (``zstd -dc``; plain files without ``age``) exits 0 and yields
exactly the dump's ``raw_size`` bytes, starting with the engine's own header. A broken backup
fails the bench instead of being measured. Then ``--warmup`` untimed rounds and ``--runs``
timed rounds of the four ``backup_create`` runs; each round alternates plain and encrypted, and
the order inside each pair flips every round (P E P E, then E P E P), so neither side always
runs right after the other. The key file and its directory are removed at the end.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from measure import ROOT, BenchError, Ours, Sample, manage_argv, ours_env, sqlite_target

KEY_NAME = "bench"
COMPRESSIONS = ("gzip", "zstd")
SIDES = ("gzip", "gzip+age", "zstd", "zstd+age")
AGE_HEADER = b"age-encryption.org/v1\n"
CONTENT_HEADERS = {"sqlite": b"SQLite format 3\x00", "postgresql": b"PGDMP"}
DECOMPRESS = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc", "-q"]}
TITLES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
CHUNK = 1024 * 1024


class EncryptionBenchError(BenchError):
    """A set-up step failed, or a backup did not decrypt and decompress to its dump."""


@dataclass
class Check:
    """The untimed check of one side's backup."""

    side: str
    file: str  # the stored file's name
    stored_bytes: int
    raw_bytes: int  # the dump's size the catalog recorded
    decoded_bytes: int  # what decrypting and decompressing the stored file yielded
    content: str  # the first bytes of that output (the engine's own header)
    command: str


@dataclass
class SourceResult:
    engine: str  # "sqlite" or "postgresql"
    size: int  # MiB (SQLite) or pgbench scale (PostgreSQL)
    source_bytes: int
    prepare_seconds: float  # generating the pgbench data (SQLite: cached by run.py)
    checks: list[Check] = field(default_factory=list)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)  # the sides' order in each timed round

    @property
    def title(self) -> str:
        unit = f"{self.size} MiB" if self.engine == "sqlite" else f"scale {self.size}"
        return f"{TITLES[self.engine]} {unit}"


@dataclass
class EncryptionResult:
    runs: int
    warmup: int
    sources: list[SourceResult] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    load: list[str] = field(default_factory=list)


def target_name(engine: str, size: int, side: str) -> str:
    return f"enc-{engine}-{size}-{side.replace('+', '-')}"


def encrypted(side: str) -> bool:
    return side.endswith("+age")


def compression_of(side: str) -> str:
    return side.removesuffix("+age")


# ---------------------------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------------------------


def measure(
    databases: dict[int, Path], scales: list[int], runs: int, warmup: int, work: Path, logs: Path
) -> EncryptionResult:
    """Every SQLite database in ``databases`` (size MiB -> file), then every pgbench scale."""
    from servers import tool_version  # no driver import; the server helpers load psycopg later

    started = time.perf_counter()
    result = EncryptionResult(runs=runs, warmup=warmup, load=[_loadavg()])
    result.versions = {
        "age CLI": tool_version(["age", "--version"]),
        "pyrage": _package("pyrage"),
    }
    secrets = work / "secrets"
    key_file = secrets / f"{KEY_NAME}.key"
    shutil.rmtree(secrets, ignore_errors=True)
    secrets.mkdir(parents=True, mode=0o700)
    try:
        if databases:
            ours = Ours(work / "home-sqlite", logs, {"BACKUPSITE_SECRETS_DIRS": str(secrets)})
            blocks = {
                target_name("sqlite", size, side): sqlite_target(
                    target_name("sqlite", size, side), database, compression_of(side)
                )
                for size, database in databases.items()
                for side in SIDES
            }
            _setup(ours, blocks, key_file)
            for size, database in databases.items():
                source = SourceResult("sqlite", size, database.stat().st_size, 0.0)
                _measure_source(source, ours, key_file, runs, warmup, logs)
                result.sources.append(source)
            result.commands.update(_commands(ours, "sqlite", max(databases), blocks, key_file, secrets))
        if scales:
            _measure_postgres(result, scales, runs, warmup, work, logs, secrets, key_file)
    finally:
        shutil.rmtree(secrets, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    result.load.append(_loadavg())
    return result


def _measure_postgres(
    result: EncryptionResult,
    scales: list[int],
    runs: int,
    warmup: int,
    work: Path,
    logs: Path,
    secrets: Path,
    key_file: Path,
) -> None:
    from servers import running, source_database

    with running("postgresql", work) as flavour:
        result.versions.update(flavour.versions())
        print(f"  PostgreSQL server up on port {flavour.server.port}", flush=True)
        generated = {}
        for scale in scales:
            began = time.perf_counter()
            print(f"  generating pgbench scale {scale} ...", flush=True)
            flavour.generate(source_database(scale), scale)
            generated[scale] = time.perf_counter() - began
        env = {**flavour.secret_env(), "BACKUPSITE_SECRETS_DIRS": str(secrets)}
        ours = Ours(work / "home-postgresql", logs, env)
        blocks = {
            target_name("postgresql", scale, side): flavour.target(
                target_name("postgresql", scale, side), source_database(scale), compression_of(side), "bench"
            )
            for scale in scales
            for side in SIDES
        }
        _setup(ours, blocks, key_file)
        for scale in scales:
            database = source_database(scale)
            source = SourceResult("postgresql", scale, flavour.database_bytes(database), generated[scale])
            _measure_source(source, ours, key_file, runs, warmup, logs)
            result.sources.append(source)
        result.commands.update(_commands(ours, "postgresql", max(scales), blocks, key_file, secrets))


def _setup(ours: Ours, blocks: dict[str, str], key_file: Path) -> None:
    """A fresh home with the targets (all plain so far); then the key (generated the first time,
    registered from its recipient after that) and the ``+age`` targets pointed at it."""
    print(f"  setting up a throwaway BACKUPSITE_HOME under {ours.home.relative_to(ROOT)} ...", flush=True)
    ours.setup(list(blocks.values()))
    argv = keys_argv(key_file, [name for name in blocks if name.endswith("-age")])
    if key_file.exists():
        public = subprocess.run(
            ["age-keygen", "-y", str(key_file)], capture_output=True, text=True, check=False
        )
        if public.returncode != 0:
            raise EncryptionBenchError(f"age-keygen -y {key_file} failed: {public.stderr.strip()}")
        argv += ["--recipient", public.stdout.strip()]
    log = ours.logs / f"encryption-keys-{ours.home.name}.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ours_env(ours.home, ours.env),
            cwd=ROOT,
            check=False,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise EncryptionBenchError(f"setting up the key failed ({done.returncode}):\n{tail}")
    mode = key_file.stat().st_mode & 0o777
    if mode != 0o600:
        raise EncryptionBenchError(f"{key_file} has mode {mode:o}, not 600")


def keys_argv(key_file: Path, targets: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "keys", KEY_NAME, str(key_file), *targets]


def _measure_source(
    source: SourceResult, ours: Ours, key_file: Path, runs: int, warmup: int, logs: Path
) -> None:
    names = {side: target_name(source.engine, source.size, side) for side in SIDES}
    print(f"  [{source.title}] checking one backup of each target (untimed) ...", flush=True)
    for side in SIDES:
        check = check_backup(ours, names[side], side, source.engine, key_file, logs)
        source.checks.append(check)
        print(
            f"  [{source.title}] {side:<9} {check.file}: {check.stored_bytes / 2**20:.1f} MiB stored, "
            f"decoded to {check.decoded_bytes} bytes = raw_size, starts {check.content!r}",
            flush=True,
        )
    actions: dict[str, Callable[[], Sample]] = {
        side: functools.partial(ours.run, names[side], side) for side in SIDES
    }
    print(f"  [{source.title}] {warmup} warm-up + {runs} timed rounds ...", flush=True)
    for round_ in range(warmup):
        for side in round_order(round_):
            _show(source, f"warm-up {round_ + 1}/{warmup}", actions[side]())
    source.samples = {side: [] for side in SIDES}
    for round_ in range(runs):
        order = round_order(round_)
        source.orders.append(order)
        for side in order:
            sample = actions[side]()
            source.samples[side].append(sample)
            _show(source, f"run {round_ + 1}/{runs}", sample)


def round_order(round_: int) -> list[str]:
    """Plain and encrypted alternate; which of a pair goes first flips every round."""
    order: list[str] = []
    for compression in COMPRESSIONS:
        pair = [compression, f"{compression}+age"]
        order += pair if round_ % 2 == 0 else pair[::-1]
    return order


def check_backup(ours: Ours, target: str, side: str, engine: str, key_file: Path, logs: Path) -> Check:
    """One untimed backup of ``target``, decrypted with Debian's age and decompressed with the
    compressor's own CLI; raises :class:`EncryptionBenchError` unless it is the whole dump."""
    try:
        _, record = ours.backup(target)
        path = ours.storage / record["file_path"]
        with open(path, "rb") as handle:
            head = handle.read(len(AGE_HEADER))
        if (head == AGE_HEADER) != encrypted(side):
            raise EncryptionBenchError(
                f"{target}: {path.name} starts {head!r}, expected encrypted={encrypted(side)}"
            )
        expected = "age" if encrypted(side) else "none"
        if record["encryption"] != expected or path.name.endswith(".age") != encrypted(side):
            raise EncryptionBenchError(
                f"{target}: recorded encryption {record['encryption']!r} for {path.name}, expected {expected!r}"
            )
        if _sha256(path) != record["checksum"]:
            raise EncryptionBenchError(f"{target}: the SHA-256 of {path.name} is not the catalog's checksum")
        decompress = DECOMPRESS[compression_of(side)]
        if encrypted(side):
            stages = [["age", "-d", "-i", str(key_file), str(path)], decompress]
        else:
            stages = [[*decompress, str(path)]]
        decoded, content = _decode(stages, logs / f"check-{target}.stderr")
        if decoded != record["raw_size"]:
            raise EncryptionBenchError(
                f"{target}: decoding {path.name} gave {decoded} bytes, the dump was {record['raw_size']}"
            )
        if not content.startswith(CONTENT_HEADERS[engine]):
            raise EncryptionBenchError(
                f"{target}: decoded {path.name} starts {content!r}, not a {engine} dump"
            )
        return Check(
            side=side,
            file=path.name,
            stored_bytes=path.stat().st_size,
            raw_bytes=record["raw_size"],
            decoded_bytes=decoded,
            content=content[: len(CONTENT_HEADERS[engine])].decode("ascii", "replace"),
            command=" | ".join(_display(stage) for stage in stages),
        )
    finally:
        ours._clean()


def _decode(stages: list[list[str]], log: Path) -> tuple[int, bytes]:
    """Run ``stages`` joined by pipes and read the last one's output: (bytes, the first 16).
    Every stage's exit status is checked."""
    processes: list[subprocess.Popen[bytes]] = []
    count, head = 0, b""
    with open(log, "wb") as err:
        try:
            for stage in stages:
                stdin = processes[-1].stdout if processes else subprocess.DEVNULL
                processes.append(subprocess.Popen(stage, stdin=stdin, stdout=subprocess.PIPE, stderr=err))
                if len(processes) > 1 and processes[-2].stdout is not None:
                    processes[-2].stdout.close()  # the next stage holds it; EPIPE reaches a dead one
            output = processes[-1].stdout
            assert output is not None
            while chunk := output.read(CHUNK):
                if len(head) < 16:
                    head += chunk[: 16 - len(head)]
                count += len(chunk)
        finally:
            for process in processes:  # a stage still writing gets EPIPE instead of blocking
                if process.stdout is not None:
                    process.stdout.close()
            statuses = [process.wait() for process in processes]
    for stage, status in zip(stages, statuses, strict=True):
        if status != 0:
            tail = log.read_text(errors="replace")[-1000:]
            raise EncryptionBenchError(f"{_display(stage)} exited {status}:\n{tail}")
    return count, head


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _show(source: SourceResult, when: str, sample: Sample) -> None:
    print(
        f"  [{source.title}] {when:<12} {sample.label:<9} {sample.seconds:7.2f}s  "
        f"peak RSS {sample.peak_rss_kib / 1024:6.1f} MiB  stored {sample.stored_bytes / 2**20:7.1f} MiB",
        flush=True,
    )


def _loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _display(argv: list[str]) -> str:
    return shlex.join(argv).replace(f"{ROOT}/", "")


def _commands(
    ours: Ours, engine: str, size: int, blocks: dict[str, str], key_file: Path, secrets: Path
) -> dict[str, str]:
    """The exact commands and target for the largest source of ``engine`` (passwords masked)."""
    env = (
        f"BACKUPSITE_HOME={_display([str(ours.home)])} DJANGO_SETTINGS_MODULE=backupsite.settings "
        f"BACKUPSITE_SECRETS_DIRS={_display([str(secrets)])}"
    )
    if engine == "postgresql":
        env += " BENCH_PG_PASSWORD=***"
    target = target_name(engine, size, "gzip+age")
    keys = _display(keys_argv(key_file, [target, target_name(engine, size, "zstd+age")]))
    if engine == "postgresql":  # the second home registers the first one's key
        keys += ' --recipient "$(age-keygen -y ' + _display([str(key_file)]) + ')"'
    check = [["age", "-d", "-i", str(key_file), "FILE.gz.age"], DECOMPRESS["gzip"]]
    return {
        f"{engine} keys": f"{env} {keys}",
        f"{engine} backup": f"{env} {_display(manage_argv('backup_create', '--target', target, '--json'))}",
        f"{engine} check": " | ".join(_display(stage) for stage in check),
        f"{engine} target": blocks[target],
    }


# ---------------------------------------------------------------------------------------------
# The keys child, run in a home's environment
# ---------------------------------------------------------------------------------------------


def keys_child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="encryptionbench.py keys")
    parser.add_argument("name")
    parser.add_argument("key_file", type=Path)
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--recipient", help="register this recipient instead of generating a key")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from backups import services
    from backups.models import Target
    from backups.resources import ServiceError

    try:
        if args.recipient:
            services.register_key(args.name, args.recipient, f"${{file:{args.key_file.absolute()}}}")
        else:
            services.generate_key(args.name, args.key_file)
        for name in args.targets:
            print("\n".join(services.rotate_key(Target.objects.get(name=name), args.name)))
    except ServiceError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 1
    return 0


def save(result: EncryptionResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result), indent=2, default=str))


def main(argv: list[str]) -> int:
    if argv[:1] == ["keys"]:
        return keys_child(argv[1:])
    print("usage: encryptionbench.py keys NAME KEY_FILE [--recipient R] TARGET... "
          "(run bench/run.py --engines encryption)", file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
