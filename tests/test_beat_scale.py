"""Beat with many schedules due at once: each firing costs beat the same few operations however
many entries the schedule holds (no entry-by-entry comparison, no catalog query per firing), the
fired entries' last runs are written together, and a change to the schedule is still seen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from schedules import beat

pytestmark = pytest.mark.catalog

ENTRIES = 60


class RecordingScheduler(beat.DatabaseScheduler):
    """Beat's scheduler with the broker left out: a firing is recorded, not sent."""

    fired: list[str]

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        self.fired.append(entry.name)

    @property
    def producer(self) -> Any:
        return None


def _due_tasks(count: int) -> list[PeriodicTask]:
    every_minute = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    ran = datetime.now(UTC) - timedelta(minutes=5)  # due since
    return PeriodicTask.objects.bulk_create(
        PeriodicTask(
            name=f"load-{n}", task="schedules.tasks.run_schedule", crontab=every_minute, last_run_at=ran
        )
        for n in range(count)
    )


def _scheduler() -> RecordingScheduler:
    from backupsite.celery import app

    scheduler = RecordingScheduler(app=app)
    scheduler._finalize.cancel()  # no sync at the test process's exit, after its catalog is gone
    scheduler.fired = []
    return scheduler


def _fire_all(scheduler: RecordingScheduler, names: set[str]) -> None:
    for _ in range(len(names) * 3):
        scheduler.tick()
        if names <= set(scheduler.fired):
            return


# Outside a test transaction, as in beat (django-celery-beat closes old connections itself).
@pytest.mark.django_db(transaction=True)
def test_it_fires_many_due_entries_once_each_with_no_query_per_firing(django_assert_max_num_queries) -> None:
    tasks = _due_tasks(ENTRIES)
    scheduler = _scheduler()
    names = {task.name for task in tasks}
    scheduler.tick()  # builds the heap (and fires the first)
    with django_assert_max_num_queries(5):  # a change check or two, beat's heartbeat: not one per firing
        _fire_all(scheduler, names)
    assert sorted(name for name in scheduler.fired if name in names) == sorted(names)


@pytest.mark.django_db(transaction=True)
def test_it_writes_the_fired_entries_last_runs_in_one_statement(django_assert_max_num_queries) -> None:
    tasks = _due_tasks(ENTRIES)
    scheduler = _scheduler()
    started = datetime.now(UTC)
    _fire_all(scheduler, {task.name for task in tasks})
    PeriodicTask.objects.filter(pk=tasks[0].pk).delete()  # gone meanwhile: the others are still written
    with django_assert_max_num_queries(3):  # the UPDATE run for every row, in one transaction
        scheduler.sync()
    rows = PeriodicTask.objects.filter(name__startswith="load-")
    assert rows.count() == ENTRIES - 1
    assert all(row.last_run_at >= started and row.total_run_count == 1 for row in rows)
    assert not scheduler._dirty
    with django_assert_max_num_queries(0):
        scheduler.sync()  # nothing fired since: nothing written


@pytest.mark.django_db(transaction=True)
def test_it_sees_a_schedule_change_at_the_next_check(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = _scheduler()
    assert "added" not in scheduler.schedule
    every_minute = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    PeriodicTask.objects.create(name="added", task="schedules.tasks.run_schedule", crontab=every_minute)
    PeriodicTasks.update_changed()
    scheduler._next_change_check = 1e18  # checked just now: not asked again within the second
    assert "added" not in scheduler.schedule
    scheduler._next_change_check = 0.0  # the second has passed
    assert "added" in scheduler.schedule


def test_it_compares_schedules_by_their_entries_identity_first() -> None:
    """A shallow copy of the same entries is equal without comparing fields; a replaced entry
    with other fields is not."""
    from backupsite.celery import app

    crontab = CrontabSchedule(minute="*", hour="*", timezone="UTC")
    entries = {
        f"e{n}": beat.ModelEntry(PeriodicTask(name=f"e{n}", task="x", crontab=crontab), app=app)
        for n in range(3)
    }
    scheduler = beat.DatabaseScheduler.__new__(beat.DatabaseScheduler)  # no catalog needed to compare
    scheduler._heap_invalidated = False
    assert scheduler.schedules_equal(dict(entries), entries)
    other = dict(entries, e1=beat.ModelEntry(PeriodicTask(name="e1", task="y", crontab=crontab), app=app))
    assert not scheduler.schedules_equal(entries, other)
    scheduler._heap_invalidated = True  # the schedule was reloaded: the heap is rebuilt
    assert not scheduler.schedules_equal(dict(entries), entries)
    assert not scheduler._heap_invalidated
