"""The restore page: a preview, the destination's name typed to confirm, a Celery task that restores
into a RestoreLog row; a real SQLite backup restored into a second real SQLite target."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from backups import services
from backups.models import Backup, Target
from restores.models import RestoreLog, RestoreStatus
from tests.conftest import digest, sqlite_rows

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


@pytest.fixture
def backup(sqlite_target: Target) -> Backup:
    return services.run_backup(sqlite_target)


def user(name: str, *, staff: bool = True, permissions: tuple[str, ...] = ()) -> Client:
    account = User.objects.create_user(name, password="x", is_staff=staff)
    account.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    client = Client()
    client.force_login(account)
    return client


@pytest.fixture
def restorer() -> Client:
    return user("alice", permissions=("restore_backup", "view_restorelog"))


def url(backup: Backup) -> str:
    return reverse("restores:restore", args=[backup.pk])


def test_it_shows_the_preview_and_the_name_to_type(restorer, backup, copy_target):
    page = restorer.get(url(backup), {"to": copy_target.pk})
    assert page.status_code == 200
    html = page.content.decode()
    assert backup.backup_name in html and "audit" in html and "people" in html
    assert "Type <strong>app-db-copy</strong> to confirm" in html
    assert f'<option value="{copy_target.pk}" selected>app-db-copy</option>' in html
    assert "app-db (the backup's own target)</option>" in html  # the source is offered too
    assert "This replaces the data of app-db-copy" in html
    assert "KiB stored (gzip)" in html
    assert "Type <strong>app-db</strong> to confirm" in restorer.get(url(backup)).content.decode()


def test_it_refuses_a_wrong_name_and_changes_nothing(restorer, backup, copy_target):
    before = digest(Path(copy_target.database))
    for typed in ("app-db", ""):
        page = restorer.post(url(backup), {"to": copy_target.pk, "confirm": typed})
        assert page.status_code == 200
        assert "type app-db-copy exactly to confirm; nothing was restored" in page.content.decode()
    assert RestoreLog.objects.count() == 0
    assert digest(Path(copy_target.database)) == before


def test_it_restores_into_the_chosen_target_once_confirmed(
    restorer, backup, copy_target, sqlite_source, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as queued:
        response = restorer.post(url(backup), {"to": copy_target.pk, "confirm": "app-db-copy"})
    assert len(queued) == 1
    log = RestoreLog.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:restores_restorelog_change", args=[log.pk])
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert (log.backup_id, log.destination_id) == (backup.pk, copy_target.pk)
    assert log.initiated_by == log.confirmed_by == "web:alice"
    assert log.progress == log.total_bytes == 2 * backup.file_size
    assert sqlite_rows(Path(copy_target.database)) == sqlite_rows(sqlite_source)
    page = restorer.get(response["Location"]).content.decode()
    assert f"Restore {log.pk} of backup {backup.pk} into app-db-copy queued" in page
    assert f'<progress value="{log.progress}" max="{log.total_bytes}">' in page


def test_it_refuses_users_without_the_permission(backup, copy_target):
    before = digest(Path(copy_target.database))
    for client in (
        user("bob", permissions=("view_restorelog",)),
        user("carol", staff=False, permissions=("restore_backup",)),
    ):
        assert client.get(url(backup)).status_code == 403
        response = client.post(url(backup), {"to": copy_target.pk, "confirm": "app-db-copy"})
        assert response.status_code == 403
    assert RestoreLog.objects.count() == 0
    assert digest(Path(copy_target.database)) == before


def test_it_sends_anonymous_visitors_to_the_login_page(backup):
    response = Client().get(url(backup))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_it_shows_why_a_restore_cannot_start(restorer, backup, files_target):
    page = restorer.get(url(backup), {"to": files_target.pk}).content.decode()
    assert "This restore cannot start" in page and "uses the files engine" in page
    assert 'name="confirm"' not in page
    response = restorer.post(url(backup), {"to": files_target.pk, "confirm": "media"})
    assert response.status_code == 200 and "uses the files engine" in response.content.decode()
    assert RestoreLog.objects.count() == 0
