"""Following work on the server by polling its GET until it ends (``--wait``).

A backup is done when its status leaves pending/running; a restore when it leaves running and
awaiting approval; a verification when a newer "verify" step than the one seen before asking has
finished. Success is only ``success``: any other end (failed, skipped, corrupt, rejected,
expired, ...) is a failure, so a state added to the server later fails safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backups.remote.client import Api
from backups.remote.errors import EXIT_GAVE_UP, EXIT_INTERRUPTED, CtlError
from backups.remote.output import Progress, clock, human_bytes, human_duration

BACKUP_ACTIVE = frozenset({"pending", "queued", "running"})
RESTORE_AWAITING = frozenset({"awaiting", "awaiting_approval"})
RESTORE_ACTIVE = frozenset({"pending", "queued", "running"}) | RESTORE_AWAITING

Item = dict[str, Any]


def status_of(item: Item) -> str:
    return str(item.get("status") or "").lower()


def succeeded(item: Item) -> bool:
    return status_of(item) == "success"


@dataclass
class Waiting:
    """How to wait: poll every ``interval`` seconds, give up after ``timeout`` (0: never)."""

    api: Api
    progress: Progress
    interval: float = 2.0
    timeout: float = 0.0
    sleep: Callable[[float], None] = field(default=time.sleep)

    def until(
        self,
        fetch: Callable[[], Item],
        done: Callable[[Item], bool],
        describe: Callable[[Item], tuple[tuple[str, ...], str]],
        what: str,
        follow: str,
    ) -> Item:
        item: Item = {}
        try:
            while True:
                item = fetch()
                if done(item):
                    return item
                state, text = describe(item)
                self.progress.show(state, text)
                if self.timeout and self.progress.elapsed >= self.timeout:
                    raise CtlError(
                        f"gave up waiting after {human_duration(self.progress.elapsed)}: {what} is still "
                        f"{status_of(item) or 'going'} on the server; follow it with `{follow}`",
                        EXIT_GAVE_UP,
                    )
                self.sleep(self.interval)
        except KeyboardInterrupt:
            raise CtlError(
                f"stopped waiting; {what} goes on on the server: follow it with `{follow}`", EXIT_INTERRUPTED
            ) from None
        finally:
            self.progress.close()

    def backup(self, backup_id: int) -> Item:
        return self.until(
            lambda: self.api.get(f"backups/{backup_id}"),
            lambda item: status_of(item) not in BACKUP_ACTIVE,
            self._describe_backup,
            f"backup {backup_id}",
            f"backupctl show {backup_id}",
        )

    def restore(self, restore_id: int) -> Item:
        return self.until(
            lambda: self.api.get(f"restores/{restore_id}"),
            lambda item: status_of(item) not in RESTORE_ACTIVE,
            self._describe_restore,
            f"restore {restore_id}",
            f"backupctl restore-status {restore_id}",
        )

    def verification(self, backup_id: int, verify_steps_before: int) -> Item:
        """The backup once a verification newer than the ``verify_steps_before`` seen has ended."""

        def done(item: Item) -> bool:
            steps = verify_steps(item)
            return len(steps) > verify_steps_before and str(steps[-1].get("status", "")).lower() != "running"

        def describe(item: Item) -> tuple[tuple[str, ...], str]:
            started = len(verify_steps(item)) > verify_steps_before
            state = "verifying" if started else "queued"
            return (state,), f"verification of backup {backup_id}: {state}, {clock(self.progress.elapsed)}"

        return self.until(
            lambda: self.api.get(f"backups/{backup_id}"),
            done,
            describe,
            f"the verification of backup {backup_id}",
            f"backupctl show {backup_id}",
        )

    def _describe_backup(self, item: Item) -> tuple[tuple[str, ...], str]:
        status = status_of(item)
        progress = item.get("progress") or {}
        phase = str(progress.get("phase") or "")
        parts = [f"backup {item.get('id')} of {item.get('target')}: {status}"]
        if phase:
            parts.append(phase)
        if progress.get("bytes_done"):
            parts.append(human_bytes(progress["bytes_done"]))
        parts.append(clock(self.progress.elapsed))
        return (status, phase), ", ".join(parts)

    def _describe_restore(self, item: Item) -> tuple[tuple[str, ...], str]:
        status = status_of(item)
        phase = str(item.get("phase") or "")
        head = f"restore {item.get('id')} of backup {item.get('backup_id')} into {item.get('to')}"
        if status in RESTORE_AWAITING:
            return (status,), f"{head}: awaiting approval by a second person (four-eyes)"
        parts = [f"{head}: {status}"]
        if phase:
            parts.append(phase)
        if item.get("bytes_done"):
            parts.append(human_bytes(item["bytes_done"]))
        parts.append(clock(self.progress.elapsed))
        return (status, phase), ", ".join(parts)


def verify_steps(backup: Item) -> list[Item]:
    steps = backup.get("steps") or []
    return [step for step in steps if isinstance(step, dict) and step.get("name") == "verify"]
