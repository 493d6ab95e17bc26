"""Downloading backups: by id only, with the download permission, streamed, every one logged.

Signed-URL redirects for S3/GCS/Azure are tested with those storages' servers in
``tests/test_storage_downloads.py``.
"""

from __future__ import annotations

import gzip
import hashlib

import pytest
from django.contrib.auth.models import Permission, User

from backups import services
from backups.models import BackupDownload, DownloadMethod

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client):
    """A staff user who can view backups but not download them."""
    user = User.objects.create_user("viewer", password="pw-viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_backup"))
    client.force_login(user)
    return user


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def test_it_streams_a_backup_to_a_user_with_the_permission(admin_client, sqlite_target, storage_dir):
    backup = services.run_backup(sqlite_target)
    response = admin_client.get(f"/backups/{backup.pk}/download/", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200
    assert response.streaming  # FileResponse: never the whole file in memory
    assert response["Content-Length"] == str(backup.file_size)
    assert response["Content-Disposition"].startswith("attachment;")
    assert backup.file_path.split("/")[-1] in response["Content-Disposition"]
    data = body_of(response)
    assert hashlib.sha256(data).hexdigest() == backup.checksum
    assert gzip.decompress(data).startswith(b"SQLite format 3")
    log = BackupDownload.objects.get()
    assert (log.backup_id, log.username, log.method, log.remote_addr) == (
        backup.pk, "admin", DownloadMethod.STREAM, "10.1.2.3",
    )  # fmt: skip
    assert log.storage is not None and log.storage.name == "local"


def test_it_gives_403_to_a_user_without_the_download_permission(client, viewer, sqlite_target):
    backup = services.run_backup(sqlite_target)
    assert client.get(f"/admin/backups/backup/{backup.pk}/change/").status_code == 200
    response = client.get(f"/backups/{backup.pk}/download/")
    assert response.status_code == 403
    assert not BackupDownload.objects.exists()

    viewer.user_permissions.add(Permission.objects.get(codename="download_backup"))
    viewer = User.objects.get(pk=viewer.pk)  # drop the permission cache
    client.force_login(viewer)
    assert client.get(f"/backups/{backup.pk}/download/").status_code == 200


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, sqlite_target):
    backup = services.run_backup(sqlite_target)
    response = client.get(f"/backups/{backup.pk}/download/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "path",
    [
        "/backups/..%2F..%2Fetc%2Fpasswd/download/",
        "/backups/app-db%2Fx.gz/download/",
        "/backups/1.5/download/",
    ],
)
def test_it_does_not_find_a_path_like_id(admin_client, sqlite_target, path):
    services.run_backup(sqlite_target)
    assert admin_client.get(path).status_code == 404
    assert not BackupDownload.objects.exists()


def test_it_does_not_find_unknown_failed_or_deleted_backups(admin_client, sqlite_target, sqlite_source):
    assert admin_client.get("/backups/999/download/").status_code == 404
    good = services.run_backup(sqlite_target)
    sqlite_source.unlink()
    failed = services.run_backup(sqlite_target)
    assert admin_client.get(f"/backups/{failed.pk}/download/").status_code == 404
    good.deleted_at = good.started_at
    good.save()
    assert admin_client.get(f"/backups/{good.pk}/download/").status_code == 404


def test_it_shows_a_download_link_in_the_admin_only_with_the_permission(
    admin_client, client, viewer, sqlite_target
):
    backup = services.run_backup(sqlite_target)
    link = f'href="/backups/{backup.pk}/download/"'
    assert link in admin_client.get("/admin/backups/backup/").content.decode()
    assert link in admin_client.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert link not in client.get("/admin/backups/backup/").content.decode()
    assert admin_client.get("/admin/backups/backupdownload/").status_code == 200


def test_it_downloads_exactly_one_selected_backup_from_the_admin_action(
    admin_client, client, viewer, sqlite_target
):
    first = services.run_backup(sqlite_target)
    second = services.run_backup(sqlite_target)
    url = "/admin/backups/backup/"
    response = admin_client.post(url, {"action": "download_selected", "_selected_action": [first.pk]})
    assert response.status_code == 302 and response["Location"] == f"/backups/{first.pk}/download/"
    response = admin_client.post(
        url, {"action": "download_selected", "_selected_action": [first.pk, second.pk]}, follow=True
    )
    assert "Select exactly one backup to download." in response.content.decode()
    # Without the permission the action is not even offered.
    assert "download_selected" not in client.get(url).content.decode()
    assert "download_selected" in admin_client.get(url).content.decode()


def test_it_closes_the_storage_of_a_streamed_download_when_the_response_closes(
    admin_client, sqlite_target, monkeypatch
):
    """SFTP and FTP storages hold a session per storage object; it must not outlive the download."""
    from backups.storages.local import LocalStorage

    closed: list[str] = []
    original = LocalStorage.close

    def close(self: LocalStorage) -> None:
        closed.append(self.name)
        original(self)

    monkeypatch.setattr(LocalStorage, "close", close)
    backup = services.run_backup(sqlite_target)
    closed.clear()
    response = admin_client.get(f"/backups/{backup.pk}/download/")
    assert hashlib.sha256(body_of(response)).hexdigest() == backup.checksum
    response.close()
    assert closed == ["local"]
