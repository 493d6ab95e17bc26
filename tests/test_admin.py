"""The admin shows targets, backups and each backup's step timeline."""

from __future__ import annotations

import re

import pytest

from backups import services

pytestmark = pytest.mark.django_db


def test_it_shows_the_history_and_a_step_timeline(admin_client, sqlite_target, files_target):
    good = services.run_backup(sqlite_target)
    services.run_backup(files_target)
    history = admin_client.get("/admin/backups/backup/")
    assert history.status_code == 200
    page = history.content.decode()
    assert "app-db" in page and "media" in page and "Success" in page

    detail = admin_client.get(f"/admin/backups/backup/{good.pk}/change/")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "Step timeline" in page
    compact = re.sub(r"\s+", "", page)
    cells = [f'<tdclass="field-name"><p>{step}</p></td>' for step in
             ("validate", "dump", "compress", "upload", "verify", "manifest")]  # fmt: skip
    positions = [compact.index(cell) for cell in cells]
    assert positions == sorted(positions)  # shown in the order they ran
    assert good.checksum in page and "Stored copies" in page


def test_it_lists_targets_with_their_last_backup(admin_client, sqlite_target, sqlite_source):
    sqlite_source.unlink()
    services.run_backup(sqlite_target)
    page = admin_client.get("/admin/backups/target/").content.decode()
    assert "app-db" in page and "Failed" in page


def test_it_shows_the_message_of_a_failed_run(admin_client, sqlite_target, sqlite_source):
    sqlite_source.unlink()
    backup = services.run_backup(sqlite_target)
    page = admin_client.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert "does not exist" in page


def test_it_registers_the_other_models(admin_client, sqlite_target):
    for url in ("/admin/backups/storage/", "/admin/schedules/backupschedule/", "/admin/restores/restorelog/"):
        assert admin_client.get(url).status_code == 200


def test_it_never_lets_the_admin_delete_a_backup(admin_client, sqlite_target):
    backup = services.run_backup(sqlite_target)
    assert admin_client.get(f"/admin/backups/backup/{backup.pk}/delete/").status_code == 403
    assert 'value="delete_selected"' not in admin_client.get("/admin/backups/backup/").content.decode()


def test_it_requires_a_login_for_the_admin(client):
    response = client.get("/admin/backups/backup/")
    assert response.status_code == 302 and "/login/" in response["Location"]
