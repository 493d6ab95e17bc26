"""Fault suite case 7: the clock jumps, forward and back. Every process here is a real
``manage.py`` under libfaketime (Debian's ``faketime``), its clock read from a timestamp file
the test rewrites, so one process can live through a whole month of nightly firings, and a
firing, the watch or ``backup_cleanup`` can run a day or a year off the true time.

The true time is TRUE_NOW, the evening after the 30th nightly backup of a site whose schedule
fires at 03:00 UTC. Invariants: a slot that ran never runs again whatever the clock says; a jump
forward runs the new slot once (not once per skipped slot) and alerts once; retention deletes
nothing the true clock would not delete (a backup dated after now is kept and counts for no rule).

Beat is not run here: its crontab check is Celery's own (a last run ahead of the clock is not
due again until the clock passes it), and the slot claim, the watch and retention, which this
module drives, are what must hold whatever delivers the firing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
pytestmark = pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="libfaketime is not installed (apt-get install faketime)"
)

DAY = timedelta(days=1)
FIRST = datetime(2030, 3, 2, 3, 0, 10, tzinfo=UTC)  # the first nightly firing, 10 s into its slot
NIGHTS = 30  # the last one 2030-03-31 03:00:10
TRUE_NOW = datetime(2030, 3, 31, 12, 0, tzinfo=UTC)
YEAR = 365 * DAY
POLICY = {"keep_daily": 7, "keep_weekly": 4, "keep_within": "14d", "retention_days": 60}

# Run in the site's manage.py shell: for each (clock, action), move this process's clock, then
# fire the schedule's task body (what a worker runs) or one pass of the watch (what beat runs
# every minute). Prints what the clock read and what came back, as JSON.
DRIVER = """
import json, os, pathlib
from django.utils import timezone
from schedules import services, tasks
from schedules.models import BackupSchedule

clock = pathlib.Path(os.environ["FAKETIME_TIMESTAMP_FILE"])
pk = BackupSchedule.objects.get(name="nightly").pk
done = []
for moment, action in json.loads(os.environ["CLOCK_STEPS"]):
    clock.write_text("@" + moment + "\\n")
    seen = timezone.now().isoformat()
    outcome = tasks.run_schedule(pk) if action == "fire" else services.watch()
    done.append({"clock": seen, "outcome": outcome})
print(json.dumps(done))
"""


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)  # Django stores UTC in SQLite


@dataclass
class Site:
    """One BACKUPSITE_HOME whose processes all run under libfaketime, reading ``clock``."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def clock(self) -> Path:
        return self.root / "clock"

    @property
    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
        env.update(
            BACKUPSITE_HOME=str(self.home),
            DJANGO_SETTINGS_MODULE="backupsite.settings",
            CELERY_BROKER_URL="filesystem://",
            TZ="UTC",  # faketime reads the timestamp file in the local zone
            LD_PRELOAD=str(LIBFAKETIME),
            FAKETIME_TIMESTAMP_FILE=str(self.clock),
            FAKETIME_NO_CACHE="1",  # read the file at every clock call: a running process jumps too
        )
        return env

    def manage(
        self, at: datetime, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``manage.py`` with its clock starting at ``at`` (exit status 0 checked)."""
        self.clock.write_text(f"@{stamp(at)}\n")
        result = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def steps(self, *steps: tuple[datetime, str]) -> list[Any]:
        """Fire or watch at each clock in turn, all in one process; each step's outcome (the
        backup id or None for a firing, the counts for the watch), having checked the clock."""
        plan = json.dumps([(stamp(moment), action) for moment, action in steps])
        result = self.manage(steps[0][0], "shell", "-v0", "-c", DRIVER, env={"CLOCK_STEPS": plan})
        done = json.loads(result.stdout.strip().splitlines()[-1])
        for (moment, _), step in zip(steps, done, strict=True):
            assert abs(datetime.fromisoformat(step["clock"]) - moment) < timedelta(seconds=5), step
        return [step["outcome"] for step in done]

    def cleanup(self, at: datetime, *args: str) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.manage(at, "backup_cleanup", "--json", *args).stdout)
        return report["targets"][0]

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.home / "backupsite.sqlite3", timeout=30)) as db:
            return list(db.execute(sql, params))

    def backups(self, *, live: bool = False) -> dict[int, datetime]:
        """Every run of the schedule (or only those not deleted): id -> started_at. The rows
        recording run times that never ran (SKIPPED, never started) are :meth:`skipped`."""
        sql = (
            "SELECT id, started_at FROM backup_history WHERE schedule_id IS NOT NULL AND status != 'skipped'"
        )
        rows = self.query(sql + (" AND deleted_at IS NULL" if live else "") + " ORDER BY id")
        return {pk: utc(started) for pk, started in rows}

    def skipped(self) -> list[str]:
        """The backup names of the rows recording run times that never ran, oldest first."""
        rows = self.query(
            "SELECT backup_name FROM backup_history WHERE status = 'skipped' ORDER BY backup_name"
        )
        return [name for (name,) in rows]

    def alerts(self, event: str) -> list[dict[str, Any]]:
        path = self.root / "alerts.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [line for line in lines if line["event"] == event]


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site with 30 nights of backups, each made by the schedule's task at its night's 03:00:10
    (one process, its clock moved night by night), then given POLICY; saved to copy per test."""
    root = tmp_path_factory.mktemp("clock")
    site = Site(root / "site")
    site.home.mkdir(parents=True)
    source = fill_sqlite(root / "site" / "app.sqlite3", rows=20)

    def configure(retention: dict[str, Any]) -> Path:
        return write_config(
            site.root / "site.toml",
            storage_dir=site.root / "backups",
            notifiers={"audit": {"kind": "audit", "path": site.root / "alerts.jsonl", "default": True}},
            targets={"app-db": {"engine": "sqlite", "database": source, "storages": ["local"], "retention": retention}},
            schedules={"nightly": {"target": "app-db", "cron": "0 3 * * *", "timezone": "UTC", "grace_minutes": 60}},
        )  # fmt: skip

    before = FIRST - DAY
    site.manage(before, "migrate", "--noinput", "-v0")
    site.manage(before, "backup_config", "apply", str(configure({})))
    fired = site.steps(*[(FIRST + night * DAY, "fire") for night in range(NIGHTS)])
    assert all(isinstance(pk, int) for pk in fired), fired
    # faketime reached Python's clock: each backup is stamped with its night's firing time.
    started = sorted(site.backups().values())
    assert [
        moment - (FIRST + night * DAY) < timedelta(seconds=2) for night, moment in enumerate(started)
    ] == [True] * NIGHTS, started
    site.manage(TRUE_NOW, "backup_config", "apply", str(configure(POLICY)))
    shutil.copytree(site.root, root / "saved", symlinks=True)
    return root


@pytest.fixture
def site(month: Path) -> Iterator[Site]:
    """The month's site as saved (same paths: the catalog holds them), for one test."""
    live = month / "site"
    shutil.rmtree(live)
    shutil.copytree(month / "saved", live, symlinks=True)
    yield Site(live)


def test_it_never_backs_up_a_slot_that_ran_again_when_the_clock_goes_back(site: Site) -> None:
    before = site.backups()
    outcomes = site.steps(
        (TRUE_NOW - timedelta(hours=1), "fire"),  # still in the slot of 03:00 today, which ran
        (TRUE_NOW - 9 * timedelta(hours=1), "fire"),  # 03:00 exactly: that slot again
        (TRUE_NOW - DAY, "fire"),  # yesterday's slot, which ran
        (FIRST + 5 * DAY, "fire"),  # the 6th night's firing time, replayed
        (TRUE_NOW - DAY, "watch"),
    )
    assert outcomes[:4] == [None] * 4
    assert outcomes[4]["missed"] == 0  # the later backups count: no false alarm
    assert site.backups() == before


def test_it_backs_up_slots_that_never_ran_while_the_clock_is_a_year_behind(site: Site) -> None:
    """A year behind, no slot ran: the schedule goes on backing up (each slot once, dated by the
    wrong clock) rather than waiting a year, and the true slots that ran stay done."""
    before = site.backups()
    behind = TRUE_NOW - YEAR
    outcomes = site.steps(
        (behind, "fire"),
        (behind + timedelta(seconds=30), "fire"),  # a second delivery of that slot
        (behind + DAY, "fire"),  # the next night
        (TRUE_NOW - DAY, "fire"),  # the clock put right, a day back: that slot ran
        (TRUE_NOW, "fire"),  # today's slot ran too
    )
    assert isinstance(outcomes[0], int) and outcomes[1] is None
    assert isinstance(outcomes[2], int) and outcomes[3:] == [None, None]
    new = {pk: started for pk, started in site.backups().items() if pk not in before}
    assert sorted(new) == [outcomes[0], outcomes[2]]
    assert all(started < TRUE_NOW - YEAR + 2 * DAY for started in new.values())


def test_it_runs_the_next_slot_once_when_the_clock_comes_forward_again(site: Site) -> None:
    next_slot = TRUE_NOW.replace(hour=3, minute=0, second=0) + DAY
    outcomes = site.steps(
        (TRUE_NOW - DAY, "fire"),
        (next_slot + timedelta(seconds=10), "fire"),
        (next_slot + timedelta(seconds=40), "fire"),  # a second delivery of that slot
        (next_slot + timedelta(hours=5), "fire"),
    )
    assert outcomes[0] is None and outcomes[2:] == [None, None]
    new = {pk: started for pk, started in site.backups().items() if started > TRUE_NOW}
    assert list(new) == [outcomes[1]]
    assert abs(new[outcomes[1]] - next_slot - timedelta(seconds=10)) < timedelta(seconds=5)


def test_it_runs_one_backup_after_a_jump_forward_not_one_per_skipped_slot(site: Site) -> None:
    before, skipped_before = site.backups(), site.skipped()
    jump = TRUE_NOW + 400 * DAY
    outcomes = site.steps(
        (TRUE_NOW + DAY, "fire"),  # +1 day: the new slot (03:00) runs though 9 h late
        (TRUE_NOW + DAY + timedelta(minutes=1), "fire"),
        (jump, "fire"),  # +400 days: one run for 400 skipped slots
        (jump + timedelta(minutes=1), "fire"),
    )
    assert isinstance(outcomes[0], int) and isinstance(outcomes[2], int)
    assert outcomes[1] is None and outcomes[3] is None
    assert sorted(set(site.backups()) - set(before)) == [outcomes[0], outcomes[2]]
    # Each run time the jump passed over is recorded, not run: one SKIPPED row each.
    skipped = sorted(set(site.skipped()) - set(skipped_before))
    first, last = TRUE_NOW + 2 * DAY, jump - DAY
    assert len(skipped) == (last - first).days + 1
    assert skipped[0].endswith(f"{first:%Y%m%d}T030000Z") and skipped[-1].endswith(f"{last:%Y%m%d}T030000Z")


def test_it_alerts_the_missed_slot_once_after_a_jump_forward_and_its_recovery(site: Site) -> None:
    jump = TRUE_NOW + 400 * DAY
    outcomes = site.steps(
        (jump, "watch"), (jump + timedelta(minutes=1), "watch"), (jump + timedelta(minutes=2), "fire")
    )
    assert outcomes[0]["missed"] == 1 and outcomes[1]["missed"] == 0
    missed = site.alerts("missed")
    assert len(missed) == 1, missed
    text = missed[0]["text"]
    assert f"at {jump:%Y-%m-%d} 03:00 UTC" in text, text  # the slot it looked for, not 400 of them
    assert f"Last success: {FIRST + (NIGHTS - 1) * DAY:%Y-%m-%d %H:%M} UTC" in text, text
    assert isinstance(outcomes[2], int)
    # That run passed over run times (recorded SKIPPED): late work, no recovery yet. The next
    # run time's run, which passes over none, is.
    assert site.alerts("recovered") == []
    next_day = (jump + DAY).replace(hour=3, minute=0, second=10)
    (on_time,) = site.steps((next_day, "fire"))
    assert isinstance(on_time, int)
    assert len(site.alerts("recovered")) == 1


def true_plan(site: Site) -> tuple[set[int], set[int]]:
    """(kept, deleted) ids of the dry-run plan at the true time."""
    report = site.cleanup(TRUE_NOW, "--dry-run")
    return {row["id"] for row in report["keep"]}, {row["id"] for row in report["delete"]}


@pytest.mark.parametrize("shift", [YEAR, 400 * DAY, -YEAR, -DAY], ids=["+1y", "+400d", "-1y", "-1d"])
def test_it_deletes_nothing_the_true_clock_would_not_under_a_jumped_clock(
    site: Site, shift: timedelta
) -> None:
    kept, doomed = true_plan(site)
    # The policy's own verdict at the true time: 7 days, 4 weeks' Sundays, 14 days; 14 of 30 go.
    assert len(kept) == 16 and len(doomed) == 14
    report = site.cleanup(TRUE_NOW + shift)
    deleted = set(report["deleted"])
    if shift > timedelta(0):  # measured from the newest backup, not the clock: the same plan
        assert deleted == doomed, report
    else:  # backups dated after now are kept and count for nothing: never more
        assert deleted <= doomed, report
    assert set(site.backups(live=True)) == set(site.backups()) - deleted
    storage = site.root / "backups"
    stored = {path.name for path in storage.rglob("*") if path.is_file()}
    names = dict(site.query("SELECT id, file_path FROM backup_history"))
    assert all(Path(names[pk]).name in stored for pk in set(site.backups()) - deleted)


def test_it_lets_a_backup_stamped_a_year_ahead_age_out_nothing(site: Site) -> None:
    kept, doomed = true_plan(site)
    ahead = TRUE_NOW.replace(hour=3, second=10) + YEAR
    (stamped,) = site.steps((ahead, "fire"))
    assert isinstance(stamped, int)
    # Measured from it, retention_days 60 expires the whole month: only the brake refuses that
    # (a policy with max_delete_fraction 1 would lose the month while the clock is ahead).
    refused = site.cleanup(ahead + timedelta(minutes=1), "--dry-run")["refused"]
    assert refused.startswith(f"refusing to delete {NIGHTS} of {NIGHTS + 1} successful backups"), refused
    assert set(site.backups(live=True)) == kept | doomed | {stamped}
    # Back at the true time it is "dated after now": kept, taking no daily or weekly place.
    report = site.cleanup(TRUE_NOW + timedelta(hours=1))
    assert set(report["deleted"]) == doomed, report
    reasons = {row["id"]: row["reasons"] for row in report["keep"]}
    assert reasons[stamped] == [
        "dated after now (a clock ran ahead or went back): kept, counted toward no rule until then"
    ]
    assert set(site.backups(live=True)) == kept | {stamped}


def test_it_alerts_and_runs_the_true_slot_when_a_clock_that_ran_ahead_comes_back(site: Site) -> None:
    ahead = TRUE_NOW.replace(hour=3, second=10) + YEAR
    next_slot = TRUE_NOW.replace(hour=3, minute=0, second=0) + DAY
    outcomes = site.steps(
        (ahead, "fire"),
        (next_slot + timedelta(minutes=90), "watch"),  # no firing yet: the slot is overdue
        (next_slot + timedelta(minutes=95), "fire"),  # a late firing of the true slot
        (next_slot + timedelta(minutes=96), "fire"),  # a second delivery of it
        (next_slot + timedelta(minutes=97), "watch"),
        (next_slot + DAY + timedelta(seconds=10), "fire"),  # the next night, as usual
    )
    # The claim a year ahead holds no true slot: it passed over a year of run times, so it
    # alerts "missed" at once, naming the first (tomorrow's 03:00), and records each SKIPPED.
    # Back at the true time the watch finds that outage already alerted; the true slot runs
    # once when it fires, and its success (a run that passed over none) is the recovery.
    assert isinstance(outcomes[0], int)
    (missed,) = site.alerts("missed")
    assert f"did not back up app-db at {next_slot:%Y-%m-%d} 03:00 UTC and 363 later" in missed["text"], missed
    assert outcomes[1]["missed"] == 0
    assert isinstance(outcomes[2], int) and outcomes[3] is None
    recovered = [alert for alert in site.alerts("recovered") if utc(alert["created_at"][:19]) < ahead]
    assert outcomes[4]["missed"] == 0 and len(recovered) == 1  # said by the run itself
    assert isinstance(outcomes[5], int)
