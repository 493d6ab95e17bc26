"""Our backups and restores in a warm process, as a Celery worker runs them.

``manage.py backup_create`` pays ~0.45 s for the interpreter and Django before its first byte
(bench/RESULTS.md, "Fixed cost of starting our process"); a worker pays it once, at its start.
:class:`WarmOurs` keeps one child process (this file run as a script) with Django set up and
hands it one request at a time over its stdin (JSON lines); the child times each request from
receipt to completion and answers on its stdout. So the per-run figure is what a scheduled
backup costs on a running worker: the claim, every step, the confirm and the manifest, without
the process start. Peak RSS is the child's VmHWM over every run it served (it never restarts),
which is what a worker's memory looks like after N backups.

The child calls the same services the worker's task calls (``services.run_backup``,
``restore_backup``); the Celery envelope (the broker round trip, ~ms) is not included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WarmOurs:
    """One warm child per BACKUPSITE_HOME; ``run``/``restore`` mirror :class:`measure.Ours`."""

    home: Path
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    _child: subprocess.Popen[bytes] | None = None
    _stderr: IO[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._child is None or self._child.poll() is not None:
            from measure import ours_env  # bench/ is the script directory, as for the other modules

            self._stderr = open(self.logs / "warm.stderr", "ab")  # noqa: SIM115 (closed in stop)
            self._child = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=ours_env(self.home, self.env),
                cwd=ROOT,
            )
            self._ask({"op": "ping"})
        return self._child

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        child = self._child
        assert child is not None and child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps(request).encode() + b"\n")
        child.stdin.flush()
        line = child.stdout.readline()
        if not line:
            tail = (self.logs / "warm.stderr").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the warm process exited while serving {request}:\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"warm {request.get('op')} failed: {answer['error']}")
        return answer

    def backup(self, target: str) -> dict[str, Any]:
        self._start()
        return self._ask({"op": "backup", "target": target})

    def restore(self, backup_id: int, destination: str) -> dict[str, Any]:
        self._start()
        return self._ask({"op": "restore", "id": backup_id, "to": destination})

    def sample(self, answer: dict[str, Any], label: str, raw_bytes: int, stored_bytes: int) -> Any:
        """A :class:`measure.Sample` of one request (its own time, the child's peak so far)."""
        from measure import ChildRun, Sample

        run = ChildRun(
            argv=["warm", label],
            seconds=answer["seconds"],
            maxrss_kib=answer["hwm_kib"],
            hwm_kib=answer["hwm_kib"],
            returncode=0,
        )
        return Sample(
            label=label,
            seconds=answer["seconds"],
            peak_rss_kib=answer["hwm_kib"],
            raw_bytes=raw_bytes,
            stored_bytes=stored_bytes,
            processes={"warm worker": run},
        )

    def run(self, ours: Any, target: str, label: str) -> Any:
        """A timed backup of ``target`` in the warm process (the file is deleted afterwards, by
        ``ours``: the cold :class:`measure.Ours` of the same home)."""
        try:
            answer = self.backup(target)
        finally:
            ours._clean()
        if answer["status"] != "success":
            raise RuntimeError(f"warm backup of {target} ended {answer['status']}: {answer['error_message']}")
        sample = self.sample(answer, label, answer["raw_size"], answer["file_size"])
        sample.steps = ours.step_seconds(answer["id"])
        return sample

    def restore_sample(self, record: dict[str, Any], destination: str, label: str) -> Any:
        answer = self.restore(record["id"], destination)
        if answer["status"] != "success":
            raise RuntimeError(
                f"warm restore into {destination} ended {answer['status']}: {answer['error_message']}"
            )
        return self.sample(answer, label, record["raw_size"], record["file_size"])

    def stop(self) -> None:
        if self._child is not None:
            if self._child.stdin is not None:
                self._child.stdin.close()
            try:
                self._child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            self._child = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


# -- the child ------------------------------------------------------------------------------------


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _serve() -> None:
    import django

    django.setup()
    from backups import services
    from backups.models import Backup, Target
    from restores.services import restore_backup

    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        try:
            if request["op"] == "ping":
                answer: dict[str, Any] = {}
            elif request["op"] == "backup":
                backup = services.run_backup(Target.objects.get(name=request["target"]))
                answer = {
                    "id": backup.pk,
                    "status": backup.status,
                    "error_message": backup.error_message,
                    "raw_size": backup.raw_size,
                    "file_size": backup.file_size,
                }
            else:
                source = Backup.objects.select_related("target").get(pk=request["id"])
                log = restore_backup(
                    source, Target.objects.get(name=request["to"]), initiated_by="bench", confirmed_by="bench"
                )
                answer = {"id": log.pk, "status": log.status, "error_message": log.error_message}
        except Exception as exc:  # the parent reports it and stops the bench
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answer["seconds"] = time.perf_counter() - started
        answer["hwm_kib"] = _vm_hwm_kib()
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")
    sys.path.insert(0, str(ROOT))
    _serve()
