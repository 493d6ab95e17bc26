"""The role-by-action matrix: every action for every role, through the web views and the admin,
answered 200/302 or 403, and a refused action changes nothing (and is audited where it acts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from backups import services
from backups.models import AuditEvent, Backup, BackupDownload, Storage, Target
from restores.models import RestoreLog
from tests.conftest import digest

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]

ROLES = ("none", "Viewer", "Operator", "Restorer", "Administrator")
ALLOWED = {
    "none": set(),
    "Viewer": {"view"},
    "Operator": {"view", "run", "verify"},
    "Restorer": {"view", "run", "verify", "preview", "restore", "download"},
    "Administrator": {"view", "run", "verify", "preview", "restore", "download", "configure", "audit"},
}


@dataclass
class World:
    target: Target
    destination: Target
    backup: Backup
    storage: Storage


@pytest.fixture
def world(sqlite_target: Target, copy_target: Target, local_storage: Storage) -> World:
    return World(sqlite_target, copy_target, services.run_backup(sqlite_target), local_storage)


def client_for(role: str) -> Client:
    user = User.objects.create_user(f"user-{role.lower()}", password="x", is_staff=True)
    if role != "none":
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def snapshot(world: World) -> tuple[Any, ...]:
    """Everything an action could change."""
    return (
        Backup.objects.count(),
        Backup.objects.get(pk=world.backup.pk).verified_at,
        RestoreLog.objects.count(),
        BackupDownload.objects.count(),
        Storage.objects.count(),
        digest(Path(world.destination.database)),
    )


Action = Callable[[Client, World], int]

ACTIONS: dict[str, Action] = {
    "view": lambda client, w: client.get("/admin/backups/backup/").status_code,
    "run": lambda client, w: client.post(f"/backups/targets/{w.target.pk}/run/").status_code,
    "verify": lambda client, w: client.post(f"/backups/{w.backup.pk}/verify/").status_code,
    "preview": lambda client, w: (
        client.get(f"/restores/backups/{w.backup.pk}/restore/", {"to": w.destination.pk}).status_code
    ),
    "restore": lambda client, w: (
        client.post(
            f"/restores/backups/{w.backup.pk}/restore/",
            {"to": w.destination.pk, "confirm": w.destination.name},
        ).status_code
    ),
    "download": lambda client, w: client.get(f"/backups/{w.backup.pk}/download/").status_code,
    "configure": lambda client, w: (
        client.post(
            "/admin/backups/storage/add/",
            {
                "name": "offsite",
                "kind": "local",
                "prefix": "",
                "required": "on",
                "options": '{"path": "/srv/x"}',
            },
        ).status_code
    ),
    "audit": lambda client, w: client.get("/admin/backups/auditevent/").status_code,
}
SUCCESS = {"view": 200, "run": 302, "verify": 302, "preview": 200, "restore": 302, "download": 200}
SUCCESS |= {"configure": 302, "audit": 200}
ACTING = ("run", "verify", "restore", "download", "configure")
AUDITED = {
    "run": "backup.run",
    "verify": "backup.verify",
    "restore": "restore.start",
    "download": "backup.download",
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(ACTIONS))
def test_it_lets_each_role_do_exactly_its_actions(
    role, action, world, eager_tasks, django_capture_on_commit_callbacks
):
    client = client_for(role)
    before = snapshot(world)
    with django_capture_on_commit_callbacks(execute=True):
        status = ACTIONS[action](client, world)
    if action in ALLOWED[role]:
        assert status == SUCCESS[action], (role, action, status)
        if action in ACTING:
            assert snapshot(world) != before, (role, action)  # it did act
        return
    assert status == 403, (role, action, status)
    assert snapshot(world) == before, (role, action)
    if action in AUDITED:
        assert AuditEvent.objects.filter(action=AUDITED[action], outcome="refused").exists()


def test_it_shows_every_role_the_dashboard_but_only_its_buttons(world):
    pages = {role: client_for(role).get("/admin/").content.decode() for role in ROLES}
    assert all(f'data-target="{world.target.pk}"' in pages[role] for role in ROLES if role != "none")
    assert f'data-target="{world.target.pk}"' not in pages["none"]  # no role: no target to see
    assert "Run now</button>" not in pages["Viewer"] and "Run now</button>" in pages["Operator"]


def test_it_scopes_a_tag_grant_through_every_action(world, eager_tasks, django_capture_on_commit_callbacks):
    """Restorer@shop on a shop target, nothing on another: allowed there, refused here."""
    from backups.models import Role, RoleGrant

    world.target.tags = ["shop"]
    world.target.save()
    user = User.objects.create_user("scoped", password="x", is_staff=True)
    RoleGrant.objects.create(user=user, role=Role.RESTORER, tag="shop")
    client = Client()
    client.force_login(user)
    assert client.get(f"/admin/backups/backup/{world.backup.pk}/change/").status_code == 200
    assert client.get(f"/backups/{world.backup.pk}/download/").status_code == 200
    before = snapshot(world)
    # The destination is untagged: restoring shop's data into it is refused, and so is the rest.
    assert ACTIONS["restore"](client, world) == 403
    assert ACTIONS["configure"](client, world) == 403
    assert client.get(f"/backups/targets/{world.destination.pk}/health/").status_code == 403
    assert snapshot(world)[1:] == before[1:]
    other = services.run_backup(world.destination)
    assert client.get(f"/admin/backups/backup/{other.pk}/change/").status_code in (302, 403)
    listing = client.get("/admin/backups/backup/").content.decode()
    assert f"/admin/backups/backup/{world.backup.pk}/change/" in listing
    assert f"/admin/backups/backup/{other.pk}/change/" not in listing
