"""The policy simulator (manage.py backup_retention_preview) and the admin's retention preview."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backups import services
from backups.models import Backup, Target

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def preview(*args: str) -> str:
    out = StringIO()
    call_command("backup_retention_preview", *args, stdout=out)
    return out.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        preview(*args)
    assert caught.value.returncode == 2
    return str(caught.value)


@pytest.fixture
def timestamps(tmp_path: Path) -> Path:
    # Deliberately unsorted, in mixed spellings, with a comment and a blank line.
    path = tmp_path / "stamps.txt"
    path.write_text(
        "# nightly backups\n"
        "2026-11-20T03:00:00Z\n"
        "2026-11-22T03:00:00+00:00\n"
        "\n"
        "2026-11-21T03:00:00Z\n"
        "2026-11-21T15:00:00Z\n"
        "2026-11-13T03:00:00Z\n"
        "2026-10-31T03:00:00Z\n"
    )
    return path


def test_it_prints_json_with_the_timestamps_as_given_newest_first(timestamps):
    out = json.loads(
        preview("--policy", "keep_daily=2,keep_weekly=3", "--timestamps", str(timestamps), "--json")
    )
    assert out == {
        "keep": [
            {"timestamp": "2026-11-22T03:00:00+00:00", "reasons": ["daily 1", "weekly 1", "newest success", "min_keep 1"]},
            {"timestamp": "2026-11-21T15:00:00Z", "reasons": ["daily 2"]},
            {"timestamp": "2026-11-13T03:00:00Z", "reasons": ["weekly 2"]},  # ISO week 46; 20-22: week 47
            {"timestamp": "2026-10-31T03:00:00Z", "reasons": ["weekly 3"]},
        ],
        "delete": [{"timestamp": "2026-11-21T03:00:00Z"}, {"timestamp": "2026-11-20T03:00:00Z"}],
    }  # fmt: skip


def test_it_prints_a_readable_table(timestamps):
    out = preview("--policy", "keep_last=1,keep_within=1d", "--timestamps", str(timestamps))
    lines = out.splitlines()
    assert lines[0] == "2 kept, 4 deleted"  # within 1d is strictly newer than 2026-11-21T03:00
    assert lines[1].split() == ["keep", "2026-11-22T03:00:00+00:00", "last", "1,", "within", "1d,", "newest", "success,", "min_keep", "1"]  # fmt: skip
    assert lines[-1].split()[:2] == ["delete", "2026-10-31T03:00:00Z"]


def test_it_understands_every_rule_name_of_the_spec(timestamps):
    spec = (
        "keep_last=3,keep_hourly=2,keep_daily=7,keep_weekly=4,keep_monthly=-1,keep_yearly=1,keep_within=2d,"
        "tiers=15min:24h;1h:72h,rules=3.1;2.15,retention_days=30,max_backups=10,min_keep=1,max_delete_fraction=0.5"
    )
    out = json.loads(preview("--policy", spec, "--timestamps", str(timestamps), "--json"))
    assert len(out["keep"]) + len(out["delete"]) == 6


def test_it_decides_the_periods_by_now_and_the_timezone(tmp_path):
    stamps = tmp_path / "berlin.txt"
    # 23:30 UTC on the 21st is 00:30 on the 22nd in Berlin: with UTC they share a day, in Berlin not.
    stamps.write_text("2026-11-21T23:30:00Z\n2026-11-21T22:30:00Z\n")
    utc = json.loads(preview("--policy", "keep_daily=5", "--timestamps", str(stamps), "--json"))
    berlin = json.loads(
        preview(
            "--policy", "keep_daily=5", "--timestamps", str(stamps), "--json", "--timezone", "Europe/Berlin"
        )
    )
    assert [k["reasons"][0] for k in utc["keep"]] == ["daily 1", "oldest (daily count left)"]
    assert [k["reasons"][0] for k in berlin["keep"]] == ["daily 1", "daily 2"]
    # --now before the newest timestamp: windows are measured from the newest one not after it.
    early = json.loads(
        preview(
            "--policy",
            "keep_within=30min",
            "--timestamps",
            str(stamps),
            "--json",
            "--now",
            "2026-11-21T23:00Z",
        )
    )
    assert [k["timestamp"] for k in early["keep"]] == ["2026-11-21T23:30:00Z", "2026-11-21T22:30:00Z"]


def test_it_reads_naive_timestamps_in_the_timezone(tmp_path):
    stamps = tmp_path / "naive.txt"
    stamps.write_text("2026-11-22 00:30\n2026-11-21 23:30\n")
    out = json.loads(
        preview(
            "--policy", "keep_daily=1", "--timestamps", str(stamps), "--json", "--timezone", "Asia/Kolkata"
        )
    )
    assert out["keep"][0]["timestamp"] == "2026-11-22 00:30"
    assert out["delete"] == [{"timestamp": "2026-11-21 23:30"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "keep_daily=seven"], "--policy keep_daily: must be a whole number, e.g. keep_daily=7"),
        (["--policy", "keep_daily=0"], "--policy keep_daily: must be a whole number of at least 1"),
        (["--policy", "keep_within=3m"], "'m' is ambiguous; write 'min' for minutes or 'mo' for months"),
        (["--policy", "keep_dialy=3"], "--policy keep_dialy: unknown rule"),
        (["--policy", "keep_daily"], "--policy 'keep_daily': write key=value"),
        (["--policy", "keep_daily=1,keep_daily=2"], "--policy keep_daily: given twice"),
        (["--policy", "tiers=1h"], "--policy tiers: '1h': write PERIOD:WINDOW"),
        (["--policy", "rules=3"], "--policy rules: '3': write COUNT.MIN_AGE_DAYS"),
        (
            ["--policy", "keep_daily=1", "--timezone", "Mars/Olympus"],
            "--timezone: unknown timezone 'Mars/Olympus'",
        ),
        (
            ["--policy", "keep_daily=1", "--now", "yesterday"],
            "--now: 'yesterday' is not an ISO 8601 timestamp",
        ),
        ([], "--policy: required with --timestamps"),
    ],
)
def test_it_refuses_bad_input_naming_what_to_fix(timestamps, args, message):
    assert message in refused(*args, "--timestamps", str(timestamps))


def test_it_refuses_bad_timestamp_files_with_the_line(tmp_path):
    stamps = tmp_path / "bad.txt"
    stamps.write_text("2026-11-22T03:00:00Z\nlast tuesday\n")
    assert f"{stamps} line 2: 'last tuesday' is not an ISO 8601 timestamp" in refused(
        "--policy", "keep_last=1", "--timestamps", str(stamps)
    )
    assert "cannot read" in refused("--policy", "keep_last=1", "--timestamps", str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert "no timestamps" in refused("--policy", "keep_last=1", "--timestamps", str(empty))


def test_it_requires_exactly_one_source(timestamps):
    with pytest.raises(CommandError):
        preview("--policy", "keep_last=1")
    with pytest.raises(CommandError):
        preview("--policy", "keep_last=1", "--timestamps", str(timestamps), "--target", "x")
    assert "--target: unknown target 'nope'" in refused("--target", "nope")


def redate(target: Target, count: int) -> list[Backup]:
    backups = [services.run_backup(target) for _ in range(count)]
    for age, backup in enumerate(reversed(backups)):
        Backup.objects.filter(pk=backup.pk).update(started_at=backups[-1].created_at - timedelta(days=age))
    return backups


def test_it_previews_a_targets_real_backups_with_ids_and_changes_nothing(sqlite_target):
    sqlite_target.retention = {"keep_last": 2}
    sqlite_target.save()
    backups = redate(sqlite_target, 3)
    out = preview("--target", "app-db")
    assert out.splitlines()[0] == "app-db: 2 kept, 1 deleted"
    assert f"delete  {backups[0].pk:>7}" in out and "success  no rule keeps it" in out
    as_json = json.loads(preview("--target", "app-db", "--json"))
    assert [k["id"] for k in as_json["keep"]] == [backups[2].pk, backups[1].pk]
    assert as_json["delete"][0]["reason"] == "no rule keeps it"
    # Another policy, tried on the same backups, without touching the target's.
    wider = json.loads(preview("--target", "app-db", "--policy", "keep_last=5", "--json"))
    assert wider["delete"] == []
    assert not Backup.objects.filter(deleted_at__isnull=False).exists()
    assert Target.objects.get(pk=sqlite_target.pk).retention == {"keep_last": 2}


def test_it_shows_what_the_policy_keeps_and_why_on_the_target_admin_page(admin_client, sqlite_target):
    sqlite_target.retention = {"keep_last": 1}
    sqlite_target.save()
    backups = redate(sqlite_target, 2)
    page = admin_client.get(f"/admin/backups/target/{sqlite_target.pk}/change/").content.decode()
    assert "The next cleanup keeps 1 and deletes 1 backup(s)." in page
    assert "last 1, newest success, min_keep 1" in page
    assert f'href="/admin/backups/backup/{backups[0].pk}/change/"' in page
    assert "no rule keeps it" in page
    assert "retention-delete" in page


def test_it_refuses_a_bad_policy_in_the_admin_naming_the_rule(admin_client, sqlite_target):
    url = f"/admin/backups/target/{sqlite_target.pk}/change/"
    form = {
        "name": "app-db",
        "engine": "sqlite",
        "database": sqlite_target.database,
        "timezone": "UTC",
        "compression": "gzip",
        "keep_within": "3m",  # the form's named retention fields
        "options": "{}",
        "include_tables": "",  # one per line
        "exclude_tables": "",
        "paths": "",
        "is_active": "on",
    }
    page = admin_client.post(url, form).content.decode()
    assert "keep_within: &#x27;3m&#x27;: &#x27;m&#x27; is ambiguous" in page
    assert Target.objects.get(pk=sqlite_target.pk).retention == {}
    form.update(keep_within="", keep_daily="7", tiers="1h:72h")
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Target.objects.get(pk=sqlite_target.pk).retention == {"keep_daily": 7, "tiers": ["1h:72h"]}
