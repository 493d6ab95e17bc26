"""Run one side of the benchmark as child processes and measure wall time and peak RSS.

Every child is started with ``subprocess.Popen`` (argument lists, no shell) and reaped with
``os.wait4`` so its own ``ru_maxrss`` (KiB on Linux) is known.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "manage.py"
GZIP_LEVEL = 6
ZSTD_LEVEL = 3


class BenchError(Exception):
    """A child failed or produced something unexpected."""


# Fork, not vfork: a vfork()ed child runs in the parent's address space until exec, and Linux
# carries that address space's high-water mark into the child's ru_maxrss, so every child would
# report at least this process's peak RSS. A fork()ed child starts from a copy of only our
# current anonymous pages (~8 MiB; see ``launch_floor``). Documented escape hatch since 3.11.
subprocess._USE_VFORK = False  # type: ignore[attr-defined]
HWM_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class ChildRun:
    argv: list[str]
    seconds: float
    maxrss_kib: int  # ru_maxrss from os.wait4: peak over the child's life, floor = launch_floor()
    hwm_kib: int  # VmHWM of the executed program's own address space, polled every 20 ms
    returncode: int


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None  # gone, or a zombie whose memory is already released


def _wait(pid: int) -> tuple[int, int, int]:
    """Reap ``pid`` (status, ru_maxrss KiB) while polling its VmHWM; wakes at once when it exits."""
    pidfd = os.pidfd_open(pid)
    hwm = 0
    try:
        while True:
            hwm = max(hwm, _vm_hwm_kib(pid) or 0)
            select.select([pidfd], [], [], HWM_POLL_SECONDS)
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return status, usage.ru_maxrss, hwm
    finally:
        os.close(pidfd)


@dataclass
class Sample:
    """One timed run of one side: the whole pipeline's wall time and per-process details."""

    label: str
    seconds: float
    peak_rss_kib: int
    raw_bytes: int
    stored_bytes: int
    processes: dict[str, ChildRun] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)


def run_child(
    argv: list[str],
    *,
    stdout: IO[bytes],
    stderr: IO[bytes],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ChildRun:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    status, maxrss, hwm = _wait(proc.pid)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(argv=argv, seconds=seconds, maxrss_kib=maxrss, hwm_kib=hwm, returncode=proc.returncode)


def launch_floor() -> ChildRun:
    """ru_maxrss of ``true`` started like every measured child: the floor of all RSS figures."""
    with open(os.devnull, "wb") as null:
        return run_child(["true"], stdout=null, stderr=null)


def _check(run: ChildRun, log: Path) -> None:
    if run.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise BenchError(f"{' '.join(run.argv)} exited {run.returncode}:\n{tail}")


def _dot_arg(path: Path) -> str:
    text = str(path)
    return f"'{text}'" if any(c.isspace() for c in text) else text


def compressor_argv(compression: str, source: Path) -> list[str]:
    if compression == "gzip":
        return ["gzip", f"-{GZIP_LEVEL}", "-c", str(source)]
    return ["zstd", f"-{ZSTD_LEVEL}", "-q", "-c", str(source)]


def baseline_argvs(source: Path, snapshot: Path, compression: str) -> tuple[list[str], list[str]]:
    return ["sqlite3", str(source), f".backup {_dot_arg(snapshot)}"], compressor_argv(compression, snapshot)


@dataclass(frozen=True)
class Baseline:
    """``sqlite3 SRC ".backup TMP" && gzip -6 -c TMP > OUT`` (or ``zstd -3 -q -c``)."""

    work: Path
    logs: Path

    def run(self, source: Path, compression: str) -> Sample:
        self.work.mkdir(parents=True, exist_ok=True)
        snapshot, out = self.work / "snapshot.db", self.work / f"out.{compression}"
        snapshot.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        backup_argv, compress_argv = baseline_argvs(source, snapshot, compression)
        log = self.logs / f"baseline-{compression}.stderr"
        try:
            started = time.perf_counter()
            with open(log, "wb") as err:
                backup = run_child(backup_argv, stdout=err, stderr=err)
                _check(backup, log)
                with open(out, "wb") as sink:
                    compress = run_child(compress_argv, stdout=sink, stderr=err)
            seconds = time.perf_counter() - started
            _check(compress, log)
            raw, stored = snapshot.stat().st_size, out.stat().st_size
        finally:
            snapshot.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
        return Sample(
            label=f"baseline-{compression}",
            seconds=seconds,
            peak_rss_kib=max(backup.maxrss_kib, compress.maxrss_kib),
            raw_bytes=raw,
            stored_bytes=stored,
            processes={"sqlite3": backup, compress_argv[0]: compress},
        )


def ours_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)  # never touch a real catalog
    env.update({"BACKUPSITE_HOME": str(home), "DJANGO_SETTINGS_MODULE": "backupsite.settings"})
    return env


def manage_argv(*args: str) -> list[str]:
    return [sys.executable, str(MANAGE), *args]


@dataclass(frozen=True)
class Ours:
    """``manage.py backup_create --target NAME --json`` against a throwaway BACKUPSITE_HOME."""

    home: Path
    logs: Path

    @property
    def storage(self) -> Path:
        return self.home / "storage"

    def manage(self, *args: str, name: str) -> ChildRun:
        log, out = self.logs / f"{name}.stderr", self.logs / f"{name}.stdout"
        with open(out, "wb") as stdout, open(log, "wb") as stderr:
            run = run_child(
                manage_argv(*args), stdout=stdout, stderr=stderr, env=ours_env(self.home), cwd=ROOT
            )
        _check(run, log)
        return run

    def setup(self, targets: dict[str, tuple[Path, str]]) -> None:
        """Fresh home, migrated catalog, one local storage and one target per (database, compression)."""
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        self.manage("migrate", "--noinput", name="migrate")
        config = self.home / "bench.toml"
        config.write_text(self._config(targets))
        self.manage("backup_config", "apply", str(config), name="config")

    def _config(self, targets: dict[str, tuple[Path, str]]) -> str:
        lines = ["[storages.bench]", 'kind = "local"', f"path = {json.dumps(str(self.storage))}", ""]
        for name, (database, compression) in targets.items():
            lines += [
                f"[targets.{name}]",
                'engine = "sqlite"',
                f"database = {json.dumps(str(database))}",
                'storages = ["bench"]',
                f'compression = "{compression}"',
                "",
            ]
        return "\n".join(lines)

    def run(self, target: str, compression: str) -> Sample:
        name = f"backup-{target}"
        try:
            run = self.manage("backup_create", "--target", target, "--json", name=name)
            records = json.loads((self.logs / f"{name}.stdout").read_text())
        finally:
            self._clean()
        record = records[0]
        if record["status"] != "success":
            raise BenchError(f"backup of {target} ended {record['status']}: {record['error_message']}")
        return Sample(
            label=f"ours-{compression}",
            seconds=run.seconds,
            peak_rss_kib=run.maxrss_kib,
            raw_bytes=record["raw_size"],
            stored_bytes=record["file_size"],
            processes={"backup_create": run},
            steps=self.step_seconds(record["id"]),
        )

    def startup(self) -> Sample:
        """A no-op Django command: the fixed cost of starting our process."""
        run = self.manage("backup_list", "--json", name="startup")
        return Sample(
            label="ours-startup",
            seconds=run.seconds,
            peak_rss_kib=run.maxrss_kib,
            raw_bytes=0,
            stored_bytes=0,
        )

    def step_seconds(self, backup_id: int) -> dict[str, float]:
        """Per-step durations the run recorded in the catalog (BackupStep rows)."""
        uri = f"file:{self.home / 'backupsite.sqlite3'}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            rows = db.execute(
                "SELECT name, started_at, completed_at FROM backups_backupstep WHERE backup_id = ?",
                (backup_id,),
            ).fetchall()
        db.close()
        steps: dict[str, float] = {}
        for name, started, completed in rows:
            if completed:
                seconds = (_when(completed) - _when(started)).total_seconds()
                steps[name] = steps.get(name, 0.0) + seconds
        return steps

    def _clean(self) -> None:
        """Delete produced backups and any leftover scratch files so the disk does not fill."""
        for path in (self.storage, self.home / "tmp"):
            if path.exists():
                for child in path.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child)
                    else:
                        child.unlink()


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)
