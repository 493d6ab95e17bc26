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
from typing import IO, Any

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
    maxrss_kib: (
        int  # ru_maxrss from os.wait4: peak over the child and its descendants, floor = launch_floor()
    )
    hwm_kib: int  # VmHWM of the executed program's own address space, polled every 20 ms
    returncode: int
    descendants: dict[str, int] = field(default_factory=dict)  # program name -> highest VmHWM KiB


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None  # gone, or a zombie whose memory is already released


def _parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, program name) of every process (this kernel has no /proc/PID/children)."""
    found: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read().decode("utf-8", "replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ")".
        head, _, tail = text.rpartition(")")
        fields = tail.split()
        if len(fields) >= 2:
            found[int(entry)] = (int(fields[1]), head.partition("(")[2])
    return found


class _Watch:
    """High-water marks of some processes and of everything they start, polled from /proc."""

    def __init__(self, pids: list[int]) -> None:
        self.roots = set(pids)
        self.hwm = dict.fromkeys(pids, 0)
        self.descendants: dict[int, tuple[int, str]] = {}  # pid -> (root pid, name)
        self.peak: dict[int, dict[str, int]] = {pid: {} for pid in pids}

    def discover(self) -> None:
        table = _parents()
        known = self.roots | set(self.descendants)
        changed = True
        while changed:  # grandchildren appear in the same scan as their parents
            changed = False
            for pid, (ppid, name) in table.items():
                if ppid in known and pid not in known:
                    root = ppid if ppid in self.roots else self.descendants[ppid][0]
                    self.descendants[pid] = (root, name)
                    known.add(pid)
                    changed = True

    def poll(self, alive: set[int]) -> None:
        for pid in alive:
            self.hwm[pid] = max(self.hwm[pid], _vm_hwm_kib(pid) or 0)
        for pid, (root, name) in list(self.descendants.items()):
            value = _vm_hwm_kib(pid)
            if value is None:
                del self.descendants[pid]  # pids are reused; a new one is discovered afresh
                continue
            peaks = self.peak[root]
            peaks[name] = max(peaks.get(name, 0), value)


_DISCOVER_EVERY = 5  # polls: look for new descendants every 100 ms, read known ones every 20 ms


def _wait_all(pids: list[int], started: float) -> dict[int, tuple[int, int, float, _Watch]]:
    """Reap every pid, polling high-water marks meanwhile; pid -> (status, ru_maxrss KiB, seconds)."""
    pidfds = {pid: os.pidfd_open(pid) for pid in pids}
    watch = _Watch(pids)
    done: dict[int, tuple[int, int, float, _Watch]] = {}
    polls = 0
    try:
        while len(done) < len(pids):
            alive = {pid for pid in pids if pid not in done}
            if polls % _DISCOVER_EVERY == 0:
                watch.discover()
            watch.poll(alive)
            polls += 1
            select.select([pidfds[pid] for pid in alive], [], [], HWM_POLL_SECONDS)
            for pid in alive:
                reaped, status, usage = os.wait4(pid, os.WNOHANG)
                if reaped:
                    done[pid] = (status, usage.ru_maxrss, time.perf_counter() - started, watch)
    finally:
        for fd in pidfds.values():
            os.close(fd)
    return done


def _child_run(argv: list[str], pid: int, result: tuple[int, int, float, _Watch]) -> ChildRun:
    status, maxrss, seconds, watch = result
    return ChildRun(
        argv=argv,
        seconds=seconds,
        maxrss_kib=maxrss,
        hwm_kib=watch.hwm[pid],
        returncode=os.waitstatus_to_exitcode(status),
        descendants=watch.peak[pid],
    )


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
    result = _wait_all([proc.pid], started)[proc.pid]
    proc.returncode = os.waitstatus_to_exitcode(result[0])
    return _child_run(argv, proc.pid, result)


def run_pipeline(
    producer: list[str],
    consumer: list[str],
    *,
    stdout: IO[bytes],
    stderr: IO[bytes],
    env: dict[str, str] | None = None,
) -> tuple[ChildRun, ChildRun, float]:
    """``producer | consumer > stdout``: two processes joined by a pipe, both reaped and measured.
    Returns both runs and the wall time until the last one exited."""
    started = time.perf_counter()
    first = subprocess.Popen(
        producer, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=env
    )
    assert first.stdout is not None
    try:
        second = subprocess.Popen(consumer, stdin=first.stdout, stdout=stdout, stderr=stderr, env=env)
    except BaseException:
        first.kill()
        first.wait()
        raise
    finally:
        first.stdout.close()  # the consumer holds the read end; a dead consumer gives the producer EPIPE
    results = _wait_all([first.pid, second.pid], started)
    seconds = time.perf_counter() - started
    first.returncode = os.waitstatus_to_exitcode(results[first.pid][0])
    second.returncode = os.waitstatus_to_exitcode(results[second.pid][0])
    return (
        _child_run(producer, first.pid, results[first.pid]),
        _child_run(consumer, second.pid, results[second.pid]),
        seconds,
    )


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


def ours_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)  # never touch a real catalog
    env.update({"BACKUPSITE_HOME": str(home), "DJANGO_SETTINGS_MODULE": "backupsite.settings"})
    env.update(extra or {})
    return env


def manage_argv(*args: str) -> list[str]:
    return [sys.executable, str(MANAGE), *args]


def sqlite_target(name: str, database: Path, compression: str) -> str:
    """A ``[targets.NAME]`` TOML block backing up a SQLite file to the ``bench`` storage."""
    return "\n".join(
        [
            f"[targets.{name}]",
            'engine = "sqlite"',
            f"database = {json.dumps(str(database))}",
            'storages = ["bench"]',
            f'compression = "{compression}"',
            "",
        ]
    )


@dataclass(frozen=True)
class Ours:
    """``manage.py backup_create --target NAME --json`` (and ``backup_restore``) against a
    throwaway BACKUPSITE_HOME. Secrets the targets reference go in ``env`` (the child's only)."""

    home: Path
    logs: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def storage(self) -> Path:
        """Storage ``bench``: timed backups, emptied after every run."""
        return self.home / "storage"

    @property
    def keep(self) -> Path:
        """Storage ``keep``: backups made once to be restored by the timed restores."""
        return self.home / "keep"

    def manage(self, *args: str, name: str) -> ChildRun:
        log, out = self.logs / f"{name}.stderr", self.logs / f"{name}.stdout"
        with open(out, "wb") as stdout, open(log, "wb") as stderr:
            run = run_child(
                manage_argv(*args), stdout=stdout, stderr=stderr, env=ours_env(self.home, self.env), cwd=ROOT
            )
        _check(run, log)
        return run

    def setup(self, targets: list[str], *, probe: bool = True) -> None:
        """Fresh home, migrated catalog, the two local storages and the given target blocks.
        ``probe=False`` for restore targets whose database the restore itself creates."""
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        self.manage("migrate", "--noinput", name="migrate")
        config = self.home / "bench.toml"
        storages = []
        for storage, path in (("bench", self.storage), ("keep", self.keep)):
            storages += [f"[storages.{storage}]", 'kind = "local"', f"path = {json.dumps(str(path))}", ""]
        config.write_text("\n".join(storages) + "\n" + "\n".join(targets))
        apply = ["backup_config", "apply", str(config)]
        self.manage(*apply, *([] if probe else ["--skip-probes"]), name="config")

    def backup(self, target: str) -> tuple[ChildRun, dict[str, Any]]:
        """One ``backup_create``; the produced file stays where the target stores it."""
        name = f"backup-{target}"
        run = self.manage("backup_create", "--target", target, "--json", name=name)
        record: dict[str, Any] = json.loads((self.logs / f"{name}.stdout").read_text())[0]
        if record["status"] != "success":
            raise BenchError(f"backup of {target} ended {record['status']}: {record['error_message']}")
        return run, record

    def run(self, target: str, label: str) -> Sample:
        """A timed backup of ``target`` (stored in ``bench``, deleted afterwards)."""
        try:
            run, record = self.backup(target)
        finally:
            self._clean()
        return Sample(
            label=label,
            seconds=run.seconds,
            peak_rss_kib=run.maxrss_kib,
            raw_bytes=record["raw_size"],
            stored_bytes=record["file_size"],
            processes={"backup_create": run},
            steps=self.step_seconds(record["id"]),
        )

    def restore(self, record: dict[str, Any], destination: str, label: str) -> Sample:
        """A timed ``backup_restore --id N --to DESTINATION --yes --json``."""
        name = f"restore-{destination}"
        argv = ["backup_restore", "--id", str(record["id"]), "--to", destination, "--yes", "--json"]
        run = self.manage(*argv, name=name)
        result = json.loads((self.logs / f"{name}.stdout").read_text())
        if result["status"] != "success":
            raise BenchError(
                f"restore into {destination} ended {result['status']}: {result['error_message']}"
            )
        return Sample(
            label=label,
            seconds=run.seconds,
            peak_rss_kib=run.maxrss_kib,
            raw_bytes=record["raw_size"],
            stored_bytes=record["file_size"],
            processes={"backup_restore": run},
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
