"""The admin keeps no per-request state on its shared ModelAdmin instances: one instance serves
every user, so what one request may see is worked out from that request alone, whichever
requests run before, between or beside it.

(Issue 18: the backup list once kept ``self._can_download`` from one request for the next.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client, RequestFactory
from django.urls import reverse

from backups import services
from backups.admin.backups import BackupAdmin
from backups.models import Backup, Target

LIST = "/admin/backups/backup/"


def staff(role: str) -> User:
    user = User.objects.create_user(f"user-{role.lower()}", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def shared_admin() -> BackupAdmin:
    model_admin = admin.site._registry[Backup]
    assert isinstance(model_admin, BackupAdmin)
    return model_admin


def download_link(backup: Backup) -> str:
    return f'<a href="{reverse("backups:download", args=[backup.pk])}">download</a>'


@pytest.mark.django_db
def test_it_answers_each_request_for_its_own_user_on_one_instance(sqlite_target: Target) -> None:
    backup = services.run_backup(sqlite_target)
    restorer, viewer = staff("Restorer"), staff("Viewer")
    factory = RequestFactory()
    as_restorer, as_viewer = factory.get(LIST), factory.get(LIST)
    as_restorer.user, as_viewer.user = restorer, viewer
    model_admin = shared_admin()

    # Interleaved: the restorer's columns are built, then the viewer's, then the restorer's
    # are rendered. State kept on the instance would now be the viewer's.
    restorer_columns = model_admin.get_list_display(as_restorer)
    viewer_columns = model_admin.get_list_display(as_viewer)
    download: Callable[[Backup], str] = restorer_columns[-1]
    assert download(backup) == download_link(backup)
    assert len(viewer_columns) == len(restorer_columns) - 1  # no Download column at all
    assert model_admin.has_download_permission(as_restorer)
    assert not model_admin.has_download_permission(as_viewer)
    assert "download_url" in model_admin.operations(as_restorer, backup)
    assert "download_url" not in model_admin.operations(as_viewer, backup)
    assert download(backup) == download_link(backup)  # still the restorer's answer

    # Whole pages, one user after the other, through the same registered instance.
    for _round in range(2):
        assert download_link(backup) in logged_in(restorer).get(LIST).content.decode()
        page = logged_in(viewer).get(LIST).content.decode()
        assert f"/admin/backups/backup/{backup.pk}/change/" in page and download_link(backup) not in page
        change = logged_in(viewer).get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
        assert reverse("backups:download", args=[backup.pk]) not in change


@pytest.mark.django_db(transaction=True)
def test_it_answers_each_user_rightly_while_requests_run_side_by_side(sqlite_target: Target) -> None:
    backup = services.run_backup(sqlite_target)
    users = {"Restorer": staff("Restorer"), "Viewer": staff("Viewer")}
    link = download_link(backup)
    # Logged in here, one after the other (a login writes; two at once can find SQLite's shared
    # test database locked), so the threads only browse.
    clients = {role: logged_in(user) for role, user in users.items()}
    start = threading.Barrier(len(users))
    wrong: list[str] = []
    answered: list[str] = []
    errors: list[str] = []

    def browse(role: str) -> None:
        try:
            start.wait(timeout=30)
            for number in range(15):
                page = clients[role].get(LIST).content.decode()
                answered.append(role)
                if f"/admin/backups/backup/{backup.pk}/change/" not in page:
                    wrong.append(f"{role} request {number}: the backup is not listed")
                elif (link in page) != (role == "Restorer"):
                    wrong.append(
                        f"{role} request {number}: download link {'shown' if link in page else 'missing'}"
                    )
        except Exception as exc:  # reported below: a thread that died must fail the test
            errors.append(f"{role}: {type(exc).__name__}: {exc}")
        finally:
            connection.close()  # this thread's own database connection

    threads = [threading.Thread(target=browse, args=(role,)) for role in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert sorted(answered) == ["Restorer"] * 15 + ["Viewer"] * 15  # every request was answered
    assert wrong == []
