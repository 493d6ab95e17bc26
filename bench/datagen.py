"""Generate realistic, compressible SQLite databases for the benchmark, cached between runs.

Rows mix timestamps, names, e-mail addresses, numbers, free text drawn from a fixed vocabulary and
32 random bytes per row, with an index: gzip -6 shrinks the file to roughly 40-50 % (neither
all-random nor all-zero). Generation is deterministic (fixed seed) apart from the random bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

GENERATOR_VERSION = 1
MIB = 1024 * 1024
BATCH_ROWS = 20_000
BLOB_BYTES = 32
_EPOCH = 1_700_000_000
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ven", "dor", "ax", "el", "quo", "ri", "um"]
_KINDS = ["login", "logout", "purchase", "refund", "view", "search", "update", "delete"]
_DOMAINS = ["example.com", "mail.test", "corp.example", "shop.test"]
_SCHEMA = (
    "CREATE TABLE events (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, user_name TEXT, "
    "email TEXT, kind TEXT, amount REAL, quantity INTEGER, message TEXT, payload BLOB)",
    "CREATE INDEX events_created_at ON events (created_at)",
)


def database_path(data_dir: Path, size_mib: int) -> Path:
    return data_dir / f"sqlite-{size_mib}MiB.db"


def _meta_path(db: Path) -> Path:
    return db.with_suffix(".json")


def is_cached(db: Path, size_mib: int) -> bool:
    meta = _meta_path(db)
    if not db.is_file() or not meta.is_file():
        return False
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return (
        info.get("version") == GENERATOR_VERSION
        and info.get("size_mib") == size_mib
        and info.get("bytes") == db.stat().st_size
    )


class _Rows:
    """Produces batches of rows; ``next_id`` keeps ids and timestamps increasing across batches."""

    def __init__(self, seed: int = 42) -> None:
        self.rng = random.Random(seed)
        self.words = ["".join(self.rng.choices(_SYLLABLES, k=self.rng.randint(1, 4))) for _ in range(2000)]
        self.next_id = 1

    def batch(self, count: int) -> list[tuple[object, ...]]:
        rng, words, rows = self.rng, self.words, []
        for row_id in range(self.next_id, self.next_id + count):
            user = words[rng.randrange(len(words))]
            rows.append(
                (
                    row_id,
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_EPOCH + row_id * 7)),
                    user,
                    f"{user}{rng.randint(1, 999)}@{_DOMAINS[row_id % len(_DOMAINS)]}",
                    _KINDS[rng.randrange(len(_KINDS))],
                    round(rng.random() * 1000, 2),
                    rng.randint(1, 50),
                    " ".join(rng.choices(words, k=rng.randint(5, 25))),
                    os.urandom(BLOB_BYTES),
                )
            )
        self.next_id += count
        return rows


def _fill(path: Path, size_mib: int) -> int:
    """Insert batches until the file reaches ``size_mib``; return the number of rows."""
    rows = _Rows()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-65536")
        for statement in _SCHEMA:
            db.execute(statement)
        while path.stat().st_size < size_mib * MIB:
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows.batch(BATCH_ROWS))
            db.commit()
    return rows.next_id - 1


def ensure_database(data_dir: Path, size_mib: int, log: bool = True) -> Path:
    """Return the cached database of ``size_mib`` MiB, generating it first if needed."""
    db = database_path(data_dir, size_mib)
    if is_cached(db, size_mib):
        return db
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = db.with_name(db.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    if log:
        print(f"generating {db.name} ({size_mib} MiB) ...", flush=True)
    count = _fill(partial, size_mib)
    os.replace(partial, db)
    info = {"version": GENERATOR_VERSION, "size_mib": size_mib, "bytes": db.stat().st_size, "rows": count}
    _meta_path(db).write_text(json.dumps(info))
    if log:
        print(f"  {count} rows, {db.stat().st_size / MIB:.0f} MiB in {time.perf_counter() - started:.0f}s")
    return db


def prune(data_dir: Path, keep_sizes: list[int], budget_bytes: int) -> None:
    """Delete cached databases of sizes not asked for (largest first) while the cache plus the
    databases asked for would exceed ``budget_bytes``, so bench/work does not grow unbounded."""
    keep = {database_path(data_dir, size) for size in keep_sizes}
    for partial in data_dir.glob("sqlite-*MiB.db.partial"):
        partial.unlink()
    others = sorted(
        (db for db in data_dir.glob("sqlite-*MiB.db") if db not in keep), key=lambda db: -db.stat().st_size
    )
    total = sum(db.stat().st_size for db in others) + sum(keep_sizes) * MIB
    for db in others:
        if total <= budget_bytes:
            break
        total -= db.stat().st_size
        db.unlink()
        _meta_path(db).unlink(missing_ok=True)


if __name__ == "__main__":
    # Run as a child by bench/run.py, so that the benchmark process itself stays small.
    ensure_database(Path(sys.argv[1]), int(sys.argv[2]))
