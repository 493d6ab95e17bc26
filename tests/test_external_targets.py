"""External targets (engine "external"): files another process writes into a local or S3 storage
are adopted by the watch's scan, alerted on when late or small, pruned by retention, verified and
downloaded, and never run or restored by Backupsite. The files are written by separate processes
(a Python child writing a file, a boto3 upload in a child), as another tool would write them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from backups import services
from backups.config import loader
from backups.models import (
    Backup,
    BackupStatus,
    CopyStatus,
    ExternalWatch,
    Notification,
    Notifier,
    Storage,
    Target,
)
from backups.tasks import run_target_backup, watch_external_targets
from restores.refusals import RestoreRefused, check_restorable
from schedules.models import BackupSchedule
from tests.servers.s3 import S3Server

pytestmark = pytest.mark.django_db

LOCAL_WRITER = """
import os, sys
path, mtime = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(path), exist_ok=True)
temporary = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
with open(temporary, "wb") as handle:
    handle.write(sys.stdin.buffer.read())
os.rename(temporary, path)
if mtime:
    os.utime(path, (float(mtime), float(mtime)))
"""

S3_WRITER = """
import os, sys, boto3
client = boto3.client(
    "s3", endpoint_url=os.environ["TOOL_ENDPOINT"], region_name="us-east-1",
    aws_access_key_id=os.environ["TOOL_ACCESS_KEY"], aws_secret_access_key=os.environ["TOOL_SECRET_KEY"],
)
client.put_object(Bucket=os.environ["TOOL_BUCKET"], Key=sys.argv[1], Body=sys.stdin.buffer.read())
"""


@pytest.fixture
def alerts(tmp_path: Path) -> Callable[[str], int]:
    """A default audit-file channel; returns a counter of the deliveries of one event."""
    Notifier.objects.create(
        name="alerts", kind="audit", options={"path": str(tmp_path / "alerts.log")}, is_default=True
    )
    return lambda event: Notification.objects.filter(event=event).count()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def write_local(storage_dir: Path, path: str, data: bytes, mtime: datetime | None = None) -> None:
    """Write ``path`` in the storage directory from another process (temporary name, rename)."""
    stamp = str(mtime.timestamp()) if mtime else ""
    subprocess.run(
        [sys.executable, "-c", LOCAL_WRITER, str(storage_dir / path), stamp],
        input=data,
        check=True,
        timeout=60,
    )


def external(storage: Storage, name: str = "pgdump", **options: str) -> Target:
    target = Target.objects.create(
        name=name, engine="external", compression="none", options={"prefix": "pg", **options}
    )
    target.storages.add(storage)
    return target


def later(minutes: float) -> datetime:
    return timezone.now() + timedelta(minutes=minutes)


def file_time(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y%m%d-%H%M}"


@pytest.fixture
def s3_tool(
    s3_server: S3Server, s3_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Storage, Callable[[str, bytes], None]]]:
    """An s3 Storage row on a fresh bucket (secrets as references) and an uploader in a child process."""
    monkeypatch.setenv("EXT_S3_ACCESS", s3_server.access_key)
    monkeypatch.setenv("EXT_S3_SECRET", s3_server.secret_key)
    bucket = s3_bucket()
    options = s3_server.options(bucket, access_key="${EXT_S3_ACCESS}", secret_key="${EXT_S3_SECRET}")
    storage = Storage.objects.create(name="offsite", kind="s3", options=options, prefix="site")
    env = {
        **os.environ,
        "TOOL_ENDPOINT": s3_server.endpoint_url,
        "TOOL_BUCKET": bucket,
        "TOOL_ACCESS_KEY": s3_server.access_key,
        "TOOL_SECRET_KEY": s3_server.secret_key,
    }

    def upload(path: str, data: bytes) -> None:
        subprocess.run(
            [sys.executable, "-c", S3_WRITER, f"site/{path}"], input=data, env=env, check=True, timeout=60
        )

    yield storage, upload


@pytest.fixture(params=["local", "s3"])
def tool(request: pytest.FixtureRequest, storage_dir: Path) -> tuple[Storage, Callable[[str, bytes], None]]:
    """A storage of either kind and a way for "another tool" to write a file into it."""
    if request.param == "s3":
        return request.getfixturevalue("s3_tool")
    storage = request.getfixturevalue("local_storage")
    return storage, lambda path, data: write_local(storage_dir, path, data)


def test_it_adopts_new_files_with_their_size_and_sha256_once(tool) -> None:
    storage, write = tool
    target = external(storage, pattern="*.sql.gz", time_from_name="%Y%m%d-%H%M")
    first, second = payload(150_000, 1), payload(2_345_678, 2)
    write("pg/app-20261205-0300.sql.gz", first)
    write("pg/daily/app-20261206-0300.sql.gz", second)
    write("pg/notes.txt", b"not a backup")
    write("other/app-20261206-0300.sql.gz", b"another folder")

    report = services.scan_external_target(target, now=later(5))

    assert report.problem == "" and report.errors == [] and report.seen == 2
    adopted = list(Backup.objects.filter(target=target).order_by("started_at"))
    assert [b.pk for b in adopted] == sorted(report.adopted)
    assert [(b.file_path, b.file_size, b.checksum, b.status) for b in adopted] == [
        ("pg/app-20261205-0300.sql.gz", len(first), sha256(first), BackupStatus.SUCCESS),
        ("pg/daily/app-20261206-0300.sql.gz", len(second), sha256(second), BackupStatus.SUCCESS),
    ]
    assert adopted[0].started_at == datetime(2026, 12, 5, 3, 0, tzinfo=UTC)  # from the name
    assert adopted[0].initiated_by == "watch" and adopted[0].backup_name == "app-20261205-0300.sql.gz"
    copy = adopted[1].copies.get()
    assert (copy.storage, copy.path, copy.size, copy.status) == (
        storage, "pg/daily/app-20261206-0300.sql.gz", len(second), CopyStatus.STORED,
    )  # fmt: skip
    assert adopted[1].steps.get(name="adopt").message.endswith(sha256(second))

    again = services.scan_external_target(target, now=later(6))
    assert again.adopted == [] and again.seen == 2
    assert Backup.objects.filter(target=target).count() == 2
    watch = ExternalWatch.objects.get(target=target)
    assert watch.scanned_at is not None and watch.error == "" and watch.scanner == ""


def test_it_leaves_a_target_to_the_scan_that_claimed_it(local_storage: Storage, storage_dir: Path) -> None:
    target = external(local_storage)
    write_local(storage_dir, "pg/a.dump", b"x" * 100)
    ExternalWatch.objects.create(target=target, scanner="elsewhere:1", claimed_at=timezone.now())

    report = services.scan_external_target(target, now=later(5))

    assert not report.claimed and not Backup.objects.exists()
    ExternalWatch.objects.filter(target=target).update(claimed_at=timezone.now() - timedelta(hours=1))
    assert services.scan_external_target(target, now=later(5)).adopted  # a silent claim is taken over


def test_it_waits_for_a_file_still_being_written(local_storage: Storage, storage_dir: Path) -> None:
    target = external(local_storage)
    write_local(storage_dir, "pg/a.dump", b"x" * 100)

    report = services.scan_external_target(target)  # modified a moment ago: may still grow

    assert report.adopted == [] and report.waiting
    assert services.scan_external_target(target, now=later(2)).adopted


def test_it_alerts_once_when_the_expected_file_is_late_and_again_when_it_comes(
    local_storage: Storage, storage_dir: Path, alerts: Callable[[str], int]
) -> None:
    target = external(local_storage, expect="0 3 * * *", grace="1h", time_from_name="%Y%m%d-%H%M")
    real = timezone.now()
    due = real.astimezone(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    due += timedelta(days=1) if due <= real else timedelta(0)
    write_local(storage_dir, f"pg/db-{file_time(due - timedelta(days=1))}.dump", payload(5000, 1))
    services.scan_external_target(target, now=later(2))  # the watch begins: nothing owed before

    assert services.scan_external_target(target, now=due + timedelta(minutes=30)).alerts == []  # in grace
    late = services.scan_external_target(target, now=due + timedelta(minutes=61))
    assert late.alerts == ["missed"] and alerts("missed") == 1
    assert services.scan_external_target(target, now=due + timedelta(minutes=90)).alerts == []
    assert alerts("missed") == 1  # once per outage
    assert 'backupsite_external_missed{target="pgdump"} 1.0' in services.metrics_exposition()[0].decode()
    assert ExternalWatch.objects.get(target=target).missed_since == due
    [summary] = services.dashboard(now=due + timedelta(minutes=90), target_ids=[target.pk]).targets
    assert summary.status == "MISSED"

    write_local(storage_dir, f"pg/db-{file_time(due + timedelta(hours=2))}.dump", payload(5100, 2))
    came = services.scan_external_target(target, now=due + timedelta(hours=3))

    assert len(came.adopted) == 1 and came.alerts == ["recovered"] and alerts("recovered") == 1
    assert ExternalWatch.objects.get(target=target).missed_since is None
    assert 'backupsite_external_missed{target="pgdump"} 0.0' in services.metrics_exposition()[0].decode()
    [summary] = services.dashboard(now=due + timedelta(hours=3), target_ids=[target.pk]).targets
    assert summary.status == "OK"


def test_it_flags_a_new_file_much_smaller_than_the_previous_one(
    s3_tool: tuple[Storage, Callable[[str, bytes], None]], alerts: Callable[[str], int]
) -> None:
    storage, upload = s3_tool
    target = external(storage, time_from_name="%Y%m%d-%H%M")
    upload("pg/app-20261201-0300.dump", payload(200_000, 1))
    services.scan_external_target(target, now=later(5))
    upload("pg/app-20261202-0300.dump", payload(20_000, 2))

    report = services.scan_external_target(target, now=later(6))

    assert report.alerts == ["anomaly"] and alerts("anomaly") == 1
    small = Backup.objects.get(pk=report.adopted[0])
    assert small.status == BackupStatus.SUCCESS and "10% of the previous file" in small.notes
    assert small.steps.get(name="anomaly").status == "failed"


def _daily_files(storage_dir: Path, days: int) -> dict[int, str]:
    """One file a day, the newest dated yesterday at 03:00 UTC (never after now): days ago -> path."""
    today = (datetime.now(UTC) - timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    paths = {}
    for ago in range(days):
        paths[ago] = f"pg/db-{file_time(today - timedelta(days=ago))}.dump"
        write_local(storage_dir, paths[ago], payload(4000 + ago, ago))
    return paths


def test_it_deletes_expired_files_from_the_storage_with_the_brake_respected(
    local_storage: Storage, storage_dir: Path
) -> None:
    target = external(local_storage, time_from_name="%Y%m%d-%H%M")
    target.retention = {"keep_last": 2}
    target.save()
    paths = _daily_files(storage_dir, 5)

    braked = services.scan_external_target(target, now=later(5))

    assert len(braked.adopted) == 5 and braked.deleted == []  # 3 of 5 is above the default half
    assert "refusing to delete 3 of 5" in ExternalWatch.objects.get(target=target).retention_note
    assert all((storage_dir / path).exists() for path in paths.values())

    target.retention = {"keep_last": 3}
    target.save()
    pruned = services.scan_external_target(target, now=later(6))

    assert len(pruned.deleted) == 2 and ExternalWatch.objects.get(target=target).retention_note == ""
    assert sorted(ago for ago, path in paths.items() if not (storage_dir / path).exists()) == [3, 4]
    for backup in Backup.objects.filter(pk__in=pruned.deleted):
        assert backup.deleted_at is not None and backup.copies.get().status == CopyStatus.DELETED


def test_it_applies_count_and_minimum_age_rules(local_storage: Storage, storage_dir: Path) -> None:
    target = external(local_storage, time_from_name="%Y%m%d-%H%M")
    target.retention = {"rules": ["3.2"]}
    target.save()
    paths = _daily_files(storage_dir, 6)

    services.scan_external_target(target, now=later(5))

    assert sorted(ago for ago, path in paths.items() if (storage_dir / path).exists()) == [0, 2, 4]


def test_it_refuses_to_run_schedule_or_restore_an_external_target(
    local_storage: Storage, storage_dir: Path, sqlite_target: Target
) -> None:
    target = external(local_storage)
    write_local(storage_dir, "pg/a.dump", b"a dump" * 100)
    [backup_id] = services.scan_external_target(target, now=later(5)).adopted
    backup = Backup.objects.get(pk=backup_id)

    with pytest.raises(services.ServiceError, match="pgdump is external"):
        services.run_backup(target)
    with pytest.raises(CommandError, match="pgdump is external"):
        call_command("backup_create", "--target", "pgdump")
    assert run_target_backup(target.pk) is None
    schedule = BackupSchedule(name="nightly", target=target, cron_expression="0 3 * * *")
    with pytest.raises(ValidationError, match="pgdump is external"):
        schedule.full_clean()
    with pytest.raises(RestoreRefused, match="pgdump is external"):
        check_restorable(backup, target)
    sqlite_backup = services.run_backup(sqlite_target)
    with pytest.raises(RestoreRefused, match="pgdump is external"):
        check_restorable(sqlite_backup, target)  # nor is anything restored into it
    with pytest.raises(services.ServiceError, match="without deep"):
        services.verify_backup(backup, deep=True)
    assert Backup.objects.filter(target=target).count() == 1  # no refused run left a row


def test_it_verifies_and_downloads_adopted_files(
    local_storage: Storage, storage_dir: Path, admin_client
) -> None:
    target = external(local_storage)
    data = payload(300_000, 7)
    write_local(storage_dir, "pg/a.dump", data)
    [backup_id] = services.scan_external_target(target, now=later(5)).adopted
    backup = Backup.objects.get(pk=backup_id)

    assert services.verify_backup(backup).ok
    backup.refresh_from_db()
    assert backup.verified and backup.status == BackupStatus.SUCCESS
    response = admin_client.get(f"/backups/{backup.pk}/download/")
    assert response.status_code == 200 and b"".join(response.streaming_content) == data

    write_local(storage_dir, "pg/a.dump", data[:-1] + b"!")  # the tool rewrote it in place
    assert not services.verify_backup(backup).ok
    assert Backup.objects.get(pk=backup.pk).status == BackupStatus.CORRUPT


def test_it_downloads_an_adopted_s3_file_through_a_signed_url(
    s3_tool: tuple[Storage, Callable[[str, bytes], None]], admin_user
) -> None:
    storage, upload = s3_tool
    target = external(storage)
    data = payload(70_000, 3)
    upload("pg/a.dump", data)
    [backup_id] = services.scan_external_target(target, now=later(5)).adopted

    download = services.start_download(backup_id, admin_user)

    with urllib.request.urlopen(download.url, timeout=30) as response:
        assert response.read() == data
    assert services.verify_backup(Backup.objects.get(pk=backup_id)).ok


def test_it_alerts_once_while_its_storage_cannot_be_listed(
    s3_server: S3Server, alerts: Callable[[str], int]
) -> None:
    bucket = f"missing-{os.getpid()}"
    storage = Storage.objects.create(name="gone", kind="s3", options=s3_server.options(bucket))
    target = external(storage)

    first = services.scan_external_target(target, now=later(5))
    second = services.scan_external_target(target, now=later(6))

    assert "storage gone" in first.problem and first.alerts == ["missed"] and second.alerts == []
    assert alerts("missed") == 1
    watch = ExternalWatch.objects.get(target=target)
    assert watch.failing_since is not None and "gone" in watch.error
    assert services.dashboard(target_ids=[target.pk]).targets[0].status == "MISSED"

    s3_server.client().create_bucket(Bucket=bucket)
    back = services.scan_external_target(target, now=later(7))

    assert back.problem == "" and back.alerts == ["recovered"] and alerts("recovered") == 1
    assert ExternalWatch.objects.get(target=target).failing_since is None


def test_it_applies_an_external_target_from_the_configuration_file(toml_config, storage_dir: Path) -> None:
    path = toml_config(
        targets={
            "pgdump": {
                "engine": "external",
                "storage": "local",
                "prefix": "pg/nightly/",
                "pattern": "re:app-\\d{8}\\.dump",
                "expect": "0 3 * * *",
                "grace": "2h",
                "timezone": "Europe/Berlin",
                "retention": {"keep_daily": 7, "rules": ["3.1"]},
            }
        }
    )
    loader.apply(loader.load(path), probe=False)

    target = Target.objects.get(name="pgdump")
    assert target.engine == "external" and [s.name for s in target.storages.all()] == ["local"]
    assert target.options == {
        "prefix": "pg/nightly", "pattern": "re:app-\\d{8}\\.dump", "expect": "0 3 * * *", "grace": "2h",
    }  # fmt: skip
    assert target.retention == {"keep_daily": 7, "rules": ["3.1"]}


def test_it_refuses_bad_settings_naming_each_key_and_changes_nothing(toml_config) -> None:
    path = toml_config(
        targets={
            "pgdump": {
                "engine": "external",
                "storage": "elsewhere",
                "pattern": "re:app-(",
                "expect": "61 * * * *",
                "grace": "2mo",
                "time_from_name": "%Y-%q",
                "host": "db.internal",
            },
            "app-db": {"engine": "sqlite", "database": "/srv/app.sqlite3", "prefix": "pg"},
        }
    )
    with pytest.raises(loader.ConfigInvalid) as caught:
        loader.apply(loader.load(path), probe=False)

    errors = "\n".join(caught.value.errors)
    for key in ("storage", "prefix", "pattern", "expect", "grace", "time_from_name", "host"):
        assert f"targets.pgdump.{key}: " in errors, errors
    assert "targets.app-db.prefix: a setting of external targets only" in errors
    assert "no storage named 'elsewhere'" in errors and "not a regular expression" in errors
    assert not Target.objects.exists()


def test_it_checks_the_admins_options_by_the_same_rules() -> None:
    connection = services.Connection(
        name="pgdump", engine="external", options={"prefix": "", "pattern": "a/*.gz", "grace": "1h"}
    )
    problems = dict(services.engine_option_problems(connection))

    assert set(problems) == {"options.prefix", "options.pattern", "options.grace"}
    assert "put the folder in prefix" in problems["options.pattern"]
    assert "set expect too" in problems["options.grace"]


def test_it_scans_every_active_external_target_from_the_periodic_task(
    eager_tasks: None, local_storage: Storage, storage_dir: Path
) -> None:
    watched = external(local_storage)
    paused = external(local_storage, name="paused")
    paused.is_active = False
    paused.save()
    write_local(storage_dir, "pg/a.dump", b"a" * 1000, mtime=timezone.now() - timedelta(minutes=10))

    watch_external_targets()

    assert [b.target for b in Backup.objects.all()] == [watched]
    assert not ExternalWatch.objects.filter(target=paused).exists()


def test_it_shows_an_external_target_on_the_dashboard_without_run_now(
    local_storage: Storage, storage_dir: Path, sqlite_target: Target, admin_client
) -> None:
    target = external(local_storage)
    write_local(storage_dir, "pg/a.dump", b"a" * 1000)
    services.scan_external_target(target, now=later(5))

    page = admin_client.get("/admin/").content.decode()

    row = page[page.index(f'<tr data-target="{target.pk}"') :].split("</tr>")[0]
    assert 'data-status="OK"' in row and "watched" in row and "Run now" not in row
    other = page[page.index(f'<tr data-target="{sqlite_target.pk}"') :].split("</tr>")[0]
    assert "Run now" in other


def test_it_knows_expect_through_the_schedules_apps_cron_clock() -> None:
    """schedules registers its cron evaluation from ready(): expect means what a schedule's cron means."""
    from backups.watching.expect import due_slot

    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    slot = due_slot("0 3 * * *", "Europe/Berlin", timedelta(hours=2), now, since=now - timedelta(days=2))
    assert slot == datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # 03:00 in Berlin (UTC+1 in December)


def test_it_refuses_run_now_in_the_browser_before_anything_is_queued(
    local_storage: Storage, admin_client, eager_tasks: None
) -> None:
    target = external(local_storage)

    response = admin_client.post(f"/backups/targets/{target.pk}/run/", follow=True)

    assert "pgdump is external" in response.content.decode()
    assert not Backup.objects.filter(target=target).exists()


def test_it_refuses_a_schedule_of_an_external_target_in_the_configuration_file(toml_config) -> None:
    path = toml_config(
        targets={"pgdump": {"engine": "external", "storage": "local", "prefix": "pg"}},
        schedules={"nightly": {"target": "pgdump", "cron": "0 3 * * *"}},
    )
    with pytest.raises(loader.ConfigInvalid) as caught:
        loader.apply(loader.load(path), probe=False)

    errors = "\n".join(caught.value.errors)
    assert "schedules.nightly.target: target 'pgdump' is external" in errors, errors
    assert not Target.objects.exists()


def test_it_reconciles_adopted_files_without_asking_for_manifests(
    local_storage: Storage, storage_dir: Path
) -> None:
    target = external(local_storage)
    write_local(storage_dir, "pg/a.dump", b"a dump" * 100)
    services.scan_external_target(target, now=later(5))

    report = services.reconcile(local_storage)

    assert report.missing == [] and report.unknown == [], (report.missing, report.unknown)


def test_it_does_not_alert_on_old_sizes_when_a_first_scan_adopts_a_backlog(
    local_storage: Storage, storage_dir: Path, alerts: Callable[[str], int]
) -> None:
    target = external(local_storage, time_from_name="%Y%m%d-%H%M")
    write_local(storage_dir, "pg/db-20261101-0300.dump", payload(200_000, 1))
    write_local(storage_dir, "pg/db-20261102-0300.dump", payload(20_000, 2))  # small, a month ago
    write_local(storage_dir, "pg/db-20261103-0300.dump", payload(21_000, 3))  # the newest: normal

    report = services.scan_external_target(target, now=later(5))

    assert len(report.adopted) == 3 and report.alerts == [] and alerts("anomaly") == 0


def test_it_asks_for_exactly_one_storage_in_the_admins_form(admin_client, local_storage: Storage) -> None:
    other = Storage.objects.create(
        name="other", kind="local", options={"path": str(local_storage.options["path"])}
    )
    form = {
        "name": "uploads", "engine": "external", "is_active": "on", "compression": "none", "timezone": "UTC",
        "options": '{"prefix": "pg"}', "storages": [local_storage.pk, other.pk],
    }  # fmt: skip
    response = admin_client.post("/admin/backups/target/add/", form)

    errors = response.context["adminform"].form.errors
    assert "exactly one storage" in errors["storages"][0]
    assert not Target.objects.filter(name="uploads").exists()
    response = admin_client.post("/admin/backups/target/add/", {**form, "storages": [local_storage.pk]})
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Target.objects.get(name="uploads").engine == "external"


def test_it_shows_the_watch_on_the_target_page(
    admin_client, local_storage: Storage, storage_dir: Path
) -> None:
    target = external(local_storage)
    page = admin_client.get(f"/admin/backups/target/{target.pk}/change/").content.decode()
    assert "not scanned yet" in page

    write_local(storage_dir, "pg/a.dump", b"a dump" * 100)
    services.scan_external_target(target, now=later(5))
    page = admin_client.get(f"/admin/backups/target/{target.pk}/change/").content.decode()

    assert "Last scan" in page and "1 matching file(s)" in page and "missing:" not in page
    assert "&lt;time" not in page and 'id="run-now-form"' not in page  # no Run now: another tool runs it
    listing = admin_client.get("/admin/backups/target/").content.decode()
    assert f"/backups/targets/{target.pk}/run/" not in listing
