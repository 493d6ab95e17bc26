"""One /metrics scrape on a catalog of 1 000 targets and 1 000 000 backups (SQLite): its wall
time, its queries and the size of the exposition. Not part of ``make bench``.

    .venv/bin/python bench/metricsbench.py [--runs 5]

The catalog is the admin benchmark's (``admindata.py``: 1 000 targets, their schedules,
1 000 000 backup rows and their copies, bulk-loaded): a copy of its cached SQLite file
(``bench/work/admin/sqlite/``) when there is one, so that file is never changed, or a new one
generated into ``bench/work/metrics/``. A child process migrates the copy, then times
``services.metrics_exposition()`` (the whole scrape but the HTTP layer) once cold and RUNS times
warm, and counts its queries; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "metrics"
ADMIN_CATALOG = ROOT / "bench" / "work" / "admin" / "sqlite" / "catalog.sqlite3"


def _env(database: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DJANGO_"))}
    return {
        **inherited,
        "DATABASE_URL": f"sqlite:///{database}",
        "BACKUPSITE_HOME": str(WORK / "home"),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
        "DEBUG": "0",
    }


def prepare() -> Path:
    database = WORK / "catalog.sqlite3"
    WORK.mkdir(parents=True, exist_ok=True)
    if database.exists():
        return database
    if ADMIN_CATALOG.exists():
        print(f"copying {ADMIN_CATALOG} ...", flush=True)
        shutil.copyfile(ADMIN_CATALOG, database)
    else:
        print("generating a catalog with bench/admindata.py (a few minutes) ...", flush=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "admindata.py")], env=_env(database), check=True)
    return database


def child(runs: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from backups import services
    from backups.models import Backup, Target

    call_command("migrate", verbosity=0, interactive=False)
    counts = {"targets": Target.objects.count(), "backups": Backup.objects.count()}
    clock = time.perf_counter()
    body, _ = services.metrics_exposition()
    cold = time.perf_counter() - clock
    warm = []
    for _ in range(runs):
        clock = time.perf_counter()
        services.metrics_exposition()
        warm.append(time.perf_counter() - clock)
    with CaptureQueriesContext(connection) as queries:
        services.metrics_exposition()
    slowest = sorted(((float(q["time"]), q["sql"][:120]) for q in queries.captured_queries), reverse=True)
    return {
        **counts,
        "cold_ms": round(cold * 1000, 1),
        "warm_ms": [round(s * 1000, 1) for s in warm],
        "median_ms": round(statistics.median(warm) * 1000, 1),
        "queries": len(queries),
        "query_seconds": [round(seconds, 3) for seconds, _ in slowest],
        "slowest_sql": slowest[0][1] if slowest else "",
        "exposition_bytes": len(body),
        "series": sum(1 for line in body.decode().splitlines() if line and not line.startswith("#")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.runs)))
        return 0
    database = prepare()
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--runs", str(options.runs)],
        env=_env(database), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    print(
        f"one scrape at {result['targets']} targets and {result['backups']} backups: "
        f"{result['median_ms']} ms warm (median of {options.runs}), {result['cold_ms']} ms cold, "
        f"{result['queries']} queries, {result['series']} series, {result['exposition_bytes']} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
