"""Admin pages people can read: the backup list in human units (exact values on hover) at a
constant number of queries, and the target form with lists one per line and the retention
policy as named rules, each error on its own field."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backups import services
from backups.models import Backup, BackupCopy, Storage, Target

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def text_of(html: str) -> str:
    """The page as read: tags dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace(" ,", ",")


@pytest.fixture
def offsite(db, tmp_path) -> Storage:
    return Storage.objects.create(name="offsite", kind="local", options={"path": str(tmp_path / "offsite")})


def make_backups(
    target: Target, storages: list[Storage], count: int, *, hours_ago: float = 3
) -> list[Backup]:
    """``count`` successful backup rows, the first copy stored and the others failed."""
    made: list[Backup] = []
    for _ in range(count):
        started = timezone.now() - timedelta(hours=hours_ago)
        backup = Backup.objects.create(
            target=target, backup_name=f"{target.name}-{len(made)}", status="success", started_at=started,
            completed_at=started + timedelta(seconds=72.4), duration_seconds=72.4, file_size=15_204_352,
        )  # fmt: skip
        for index, storage in enumerate(storages):
            BackupCopy.objects.create(
                backup=backup, storage=storage, path=f"x/{backup.pk}", status="stored" if index == 0 else "failed",
                error_message="" if index == 0 else "connection refused",
            )  # fmt: skip
        made.append(backup)
    return made


def test_it_lists_backups_newest_first_in_human_units(
    admin_client, settings, sqlite_target, local_storage, offsite
):
    settings.TIME_ZONE = "Europe/Berlin"
    older, newer = make_backups(sqlite_target, [local_storage, offsite], 2)
    html = admin_client.get("/admin/backups/backup/").content.decode()
    rows = re.findall(r'<a href="/admin/backups/backup/(\d+)/change/">', html)
    assert rows == [str(newer.pk), str(older.pk)]
    assert '<span title="15,204,352 bytes">14.5 MiB</span>' in html
    assert '<span title="72.400 s">1 min 12 s</span>' in html
    local = timezone.localtime(newer.started_at)
    assert local.utcoffset() != timedelta(0)  # the title shows the site's local time
    assert f'title="{local:%Y-%m-%d %H:%M:%S %Z}">3 h ago</time>' in html
    assert '<span title="Stored">local ✓</span>, <span title="connection refused">offsite ✗</span>' in html
    page = text_of(html)
    assert "app-db Full Success 3 h ago 1 min 12 s 14.5 MiB local ✓, offsite ✗" in page


def test_it_lists_backups_with_as_many_queries_for_many_rows_as_for_few(
    admin_client, sqlite_target, files_target, local_storage, offsite
):
    make_backups(sqlite_target, [local_storage, offsite], 2)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/backups/backup/").status_code == 200
        return len(captured)

    few = queries()
    make_backups(files_target, [offsite, local_storage], 6)
    assert queries() == few


def test_it_lists_targets_with_as_many_queries_for_many_rows_as_for_few(admin_client, local_storage):
    def queries() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get("/admin/backups/target/")
        return len(captured), response.content.decode()

    for index in range(2):
        target = Target.objects.create(name=f"t{index}", engine="sqlite", database=f"/srv/{index}.sqlite3")
        make_backups(target, [local_storage], 2, hours_ago=5)
    few, _ = queries()
    for index in range(2, 7):
        target = Target.objects.create(name=f"t{index}", engine="sqlite", database=f"/srv/{index}.sqlite3")
        make_backups(target, [local_storage], 1, hours_ago=5)
    Target.objects.create(name="never", engine="sqlite", database="/srv/never.sqlite3")
    many, html = queries()
    assert many == few
    page = text_of(html)
    assert page.count("Success 5 h ago") == 7 and "never" in page


def test_it_shows_a_backup_page_in_human_units(admin_client, sqlite_target):
    backup = services.run_backup(sqlite_target)
    html = admin_client.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert f'<span title="{backup.file_size:,} bytes">' in html
    assert f'<span title="{backup.raw_size:,} bytes">' in html
    assert "Size before compression" in html and "just now</time>" in html
    # The step timeline: each step's start on hover, its duration in seconds.
    compact = re.sub(r">\s+<", "><", html)
    assert re.search(
        r'<td class="field-started"><p><time datetime="[^"]+" title="[^"]+">just now</time>', compact
    )
    assert re.search(
        r'<td class="field-duration_label"><p><span title="[\d.]+ s">[\d.]+ s</span></p></td>', compact
    )


# -- the target form ------------------------------------------------------------------------------


def target_form(target: Target, **values: str) -> dict[str, object]:
    """What the change form posts for ``target`` as it is, with ``values`` typed in."""
    form: dict[str, object] = {
        "name": target.name, "engine": target.engine, "is_active": "on", "compression": target.compression,
        "host": target.host, "port": target.port or "", "database": target.database, "user": target.user,
        "password": target.password, "timezone": target.timezone, "options": json.dumps(target.options),
        "sandbox": "", "storages": [storage.pk for storage in target.storages.all()],
        "paths": "\n".join(target.paths), "config_paths": "\n".join(target.config_paths),
        "include_tables": "\n".join(target.include_tables), "exclude_tables": "\n".join(target.exclude_tables),
    }  # fmt: skip
    return {**form, **values}


def change_url(target: Target) -> str:
    return f"/admin/backups/target/{target.pk}/change/"


def test_it_edits_lists_one_per_line(admin_client, sqlite_target):
    form = target_form(
        sqlite_target,
        paths="  /srv/media \n\n/srv/uploads\n",
        include_tables="main.people\n   \nmain.audit ",
        exclude_tables="",
        config_paths="/etc/backupsite.toml\r\n",
    )
    response = admin_client.post(change_url(sqlite_target), form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    target = Target.objects.get(pk=sqlite_target.pk)
    assert target.paths == ["/srv/media", "/srv/uploads"]
    assert target.include_tables == ["main.people", "main.audit"]
    assert target.exclude_tables == []
    assert target.config_paths == ["/etc/backupsite.toml"]
    html = admin_client.get(change_url(target)).content.decode()
    assert re.search(r'<textarea name="paths"[^>]*>\n?/srv/media\n/srv/uploads</textarea>', html)
    assert re.search(r'<textarea name="include_tables"[^>]*>\n?main.people\nmain.audit</textarea>', html)


def test_it_refuses_a_relative_configuration_path_on_its_field(admin_client, sqlite_target):
    response = admin_client.post(
        change_url(sqlite_target), target_form(sqlite_target, config_paths="etc/my.cnf")
    )
    assert response.status_code == 200
    assert "config_paths" in response.context["adminform"].form.errors
    assert Target.objects.get(pk=sqlite_target.pk).config_paths == []


def test_it_assembles_the_retention_policy_from_named_fields(admin_client, sqlite_target):
    rules = {
        "keep_last": "3", "keep_hourly": "24", "keep_daily": "7", "keep_weekly": "4", "keep_monthly": "12",
        "keep_yearly": "-1", "keep_within": " 2d ", "tiers": "1h:72h\n\n 1d:14d \n", "rules": "3.1\n2.15",
        "retention_days": "400", "max_backups": "200", "min_keep": "2", "max_delete_fraction": "0.25",
    }  # fmt: skip
    response = admin_client.post(change_url(sqlite_target), target_form(sqlite_target, **rules))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Target.objects.get(pk=sqlite_target.pk).retention == {
        "keep_last": 3, "keep_hourly": 24, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12,
        "keep_yearly": -1, "keep_within": "2d", "tiers": ["1h:72h", "1d:14d"], "rules": ["3.1", "2.15"],
        "retention_days": 400, "max_backups": 200, "min_keep": 2, "max_delete_fraction": 0.25,
    }  # fmt: skip

    html = admin_client.get(change_url(sqlite_target)).content.decode()
    assert re.search(r'<input type="number" name="keep_daily" value="7"', html)
    assert re.search(r'<input type="text" name="keep_within" value="2d"', html)
    assert re.search(r'<textarea name="tiers"[^>]*>\n?1h:72h\n1d:14d</textarea>', html)
    assert 'id="retention-preview"' in html or "No backups yet." in html  # the live plan stays

    # Fields left empty are rules not used; none at all is the empty policy (nothing deleted).
    response = admin_client.post(change_url(sqlite_target), target_form(sqlite_target, keep_daily="7"))
    assert response.status_code == 302
    assert Target.objects.get(pk=sqlite_target.pk).retention == {"keep_daily": 7}
    assert admin_client.post(change_url(sqlite_target), target_form(sqlite_target)).status_code == 302
    assert Target.objects.get(pk=sqlite_target.pk).retention == {}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("keep_within", "3m", "keep_within: '3m': 'm' is ambiguous"),
        ("keep_daily", "0", "keep_daily: must be a whole number of at least 1, or -1 for unlimited (got 0)"),
        ("max_backups", "-1", "max_backups: must be a whole number of at least 1 (got -1)"),
        ("tiers", "1h:72h\n1h", "tiers: '1h': write PERIOD:WINDOW"),
        ("rules", "3", "rules: '3': write COUNT.MIN_AGE_DAYS"),
        ("max_delete_fraction", "2", "max_delete_fraction: must be a number above 0 and at most 1"),
        ("keep_hourly", "lots", "Enter a whole number."),
    ],
)
def test_it_names_the_rule_and_the_fix_on_its_own_field(admin_client, sqlite_target, field, value, message):
    sqlite_target.retention = {"keep_last": 5}
    sqlite_target.save()
    response = admin_client.post(
        change_url(sqlite_target), target_form(sqlite_target, keep_last="2", **{field: value})
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert errors[field][0].startswith(message), errors[field]
    assert Target.objects.get(pk=sqlite_target.pk).retention == {"keep_last": 5}
    assert f'<ul class="errorlist" id="id_{field}_error">' in response.content.decode()  # shown at the field


def test_it_reports_a_bad_timezone_once_on_its_field(admin_client, sqlite_target):
    response = admin_client.post(
        change_url(sqlite_target), target_form(sqlite_target, timezone="Europe", keep_daily="7")
    )
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["timezone"] and len(errors["timezone"]) == 1
    assert "unknown timezone 'Europe'" in errors["timezone"][0]


def test_it_replaces_an_unreadable_stored_policy(admin_client, sqlite_target):
    Target.objects.filter(pk=sqlite_target.pk).update(retention={"keep_dayly": 7, "keep_weekly": "4"})
    html = admin_client.get(change_url(sqlite_target)).content.decode()
    assert re.search(r'name="keep_weekly" value="4"', html)
    response = admin_client.post(change_url(sqlite_target), target_form(sqlite_target, keep_weekly="0"))
    assert response.status_code == 200 and list(response.context["adminform"].form.errors) == ["keep_weekly"]
    response = admin_client.post(change_url(sqlite_target), target_form(sqlite_target, keep_weekly="4"))
    assert response.status_code == 302
    assert Target.objects.get(pk=sqlite_target.pk).retention == {"keep_weekly": 4}


def test_it_adds_a_target_from_the_form(admin_client, local_storage, files_tree):
    form = {
        "name": "media", "engine": "files", "is_active": "on", "compression": "zstd", "timezone": "UTC",
        "options": "{}", "paths": f"{files_tree}\n", "storages": [local_storage.pk], "keep_daily": "7",
    }  # fmt: skip
    response = admin_client.post("/admin/backups/target/add/", form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    target = Target.objects.get(name="media")
    assert (target.paths, target.retention, target.include_tables) == (
        [str(files_tree)],
        {"keep_daily": 7},
        [],
    )
    assert services.run_backup(target).status == "success"


def test_it_shows_only_the_fields_of_the_chosen_engine_with_every_field_without_javascript(
    admin_client, sqlite_target
):
    html = admin_client.get(change_url(sqlite_target)).content.decode()
    match = re.search(r'<script id="engine-fields" type="application/json">(.*?)</script>', html)
    assert match
    fields = json.loads(match.group(1))
    assert fields["engines"]["sqlite"] == ["database"] and fields["engines"]["files"] == ["paths"]
    assert fields["default"] == ["host", "port", "database", "user", "password"]
    assert set(fields["all"]) == {"host", "port", "database", "user", "password", "paths"}
    assert 'document.getElementById("id_engine")' in html
    for name in fields["all"]:  # all in the page: the script only hides rows
        assert f'class="form-row field-{name}"' in html
