"""Roles: the four groups and their permissions, ``can(user, action, target)`` for every role and
action, grants scoped to targets by tag, and roles re-evaluated from a directory at each login."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.exceptions import ValidationError
from django.db import connection

from backups.access.roles import (
    ACTIONS,
    apply_grants,
    can,
    has_any_role,
    sync_role_groups,
    visible_target_ids,
)
from backups.models import Role, RoleGrant, Target

pytestmark = pytest.mark.catalog

# role -> the actions it may do on every target
EXPECTED = {
    "Viewer": {"view"},
    "Operator": {"view", "run", "verify"},
    "Restorer": {"view", "run", "verify", "preview", "restore", "approve", "download"},
    "Administrator": set(ACTIONS),
}


@dataclass(frozen=True)
class Grant:
    role: str
    tag: str | None = None


def user_with(*roles: str, name: str = "") -> User:
    user = User.objects.create_user(name or "-".join(roles).lower() or "nobody", is_staff=True)
    user.groups.add(*Group.objects.filter(name__in=roles))
    return User.objects.get(pk=user.pk)  # no permission cache


def target(name: str, *tags: str) -> Target:
    return Target.objects.create(name=name, engine="sqlite", database=f"/{name}", tags=list(tags))


def test_it_creates_the_four_role_groups_when_the_database_is_migrated(db):
    assert set(Group.objects.values_list("name", flat=True)) >= set(Role.values)
    administrator = Group.objects.get(name="Administrator").permissions.values_list("codename", flat=True)
    assert {"change_target", "add_storage", "change_user", "change_group"} <= set(administrator)
    assert not {"add_auditevent", "change_auditevent", "delete_auditevent"} & set(administrator)
    viewer = set(Group.objects.get(name="Viewer").permissions.values_list("codename", flat=True))
    assert {"view_backup", "view_target", "view_backupschedule", "view_restorelog"} <= viewer
    assert not {"run_backup", "change_target", "download_backup", "restore_backup"} & viewer


def test_it_keeps_the_groups_in_step_when_synced_again(db):
    Group.objects.get(name="Operator").permissions.clear()
    sync_role_groups()
    codenames = set(Group.objects.get(name="Operator").permissions.values_list("codename", flat=True))
    assert {"run_backup", "verify_backup", "view_backup"} <= codenames


@pytest.mark.parametrize("role", list(EXPECTED))
def test_it_lets_each_role_do_exactly_its_actions_on_every_target(db, role):
    user = user_with(role)
    shop = target("shop-db", "shop")
    allowed = {action for action in ACTIONS if can(user, action, shop)}
    assert allowed == EXPECTED[role]
    assert {action for action in ACTIONS if can(user, action)} == EXPECTED[role]


def test_it_lets_a_superuser_do_everything_and_an_inactive_or_anonymous_user_nothing(db):
    boss = User.objects.create_superuser("boss", password="x")
    assert all(can(boss, action) for action in ACTIONS)
    gone = user_with("Administrator", name="gone")
    gone.is_active = False
    assert not any(can(gone, action) for action in ACTIONS)
    assert not any(can(AnonymousUser(), action) for action in ACTIONS)


def test_it_scopes_a_grant_to_the_targets_carrying_its_tag(db):
    shop, billing, untagged = (
        target("shop-db", "shop", "production"),
        target("billing-db", "billing"),
        target("misc"),
    )
    user = user_with(name="shopkeeper")
    RoleGrant.objects.create(user=user, role=Role.RESTORER, tag="shop")
    assert can(user, "restore", shop) and can(user, "download", shop) and can(user, "view", shop)
    assert not can(user, "restore", billing) and not can(user, "view", untagged)
    assert not can(user, "configure", shop)  # a Restorer, even on its own targets
    assert not can(user, "restore")  # nothing everywhere
    assert visible_target_ids(user) == {shop.pk}
    assert has_any_role(user)


def test_it_shows_every_target_to_a_global_viewer_and_none_to_a_user_without_a_role(db):
    target("shop-db", "shop")
    assert visible_target_ids(user_with("Viewer")) is None
    nobody = user_with(name="nobody")
    assert visible_target_ids(nobody) == set() and not has_any_role(nobody)


def test_it_replaces_a_directory_users_roles_at_each_login(db):
    user = User.objects.create_user("alice")
    assert apply_grants(user, [Grant("Restorer"), Grant("Operator", "shop")], "ldap")
    user = User.objects.get(pk=user.pk)
    assert user.is_staff and set(user.groups.values_list("name", flat=True)) == {"Restorer"}
    assert list(RoleGrant.objects.filter(user=user).values_list("role", "tag", "source")) == [
        ("Operator", "shop", "ldap")
    ]
    assert not apply_grants(user, [Grant("Restorer"), Grant("Operator", "shop")], "ldap")  # unchanged

    # Removed from the directory's groups: the roles go, and so does the admin's door.
    assert apply_grants(user, [], "ldap")
    user = User.objects.get(pk=user.pk)
    assert not user.is_staff and not user.groups.exists() and not RoleGrant.objects.filter(user=user).exists()


def test_it_leaves_grants_from_other_sources_alone(db):
    user = User.objects.create_user("bob")
    RoleGrant.objects.create(user=user, role=Role.VIEWER, tag="billing", source="local")
    apply_grants(user, [Grant("Viewer", "shop")], "oidc")
    assert set(RoleGrant.objects.filter(user=user).values_list("tag", "source")) == {
        ("billing", "local"),
        ("shop", "oidc"),
    }


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("shop", "a list of tags"),
        (["Shop"], "'Shop' is not a tag"),
        (["a b"], "'a b' is not a tag"),
    ],
)
def test_it_refuses_bad_tags_naming_the_field(db, tags, message):
    bad = Target(name="bad", engine="sqlite", database="/bad", tags=tags)
    with pytest.raises(ValidationError) as caught:
        bad.full_clean()
    assert message in str(caught.value.message_dict["tags"])


def test_it_refuses_queued_work_whose_requester_lost_the_role_before_a_worker_took_it(db, sqlite_target):
    from backups.models import AuditEvent, Backup
    from backups.tasks import run_target_backup

    user = user_with("Operator", name="olga")
    assert run_target_backup(sqlite_target.pk, initiated_by="web:olga") is not None
    user.groups.clear()  # the role is withdrawn while the next task waits
    assert run_target_backup(sqlite_target.pk, initiated_by="web:olga") is None
    assert Backup.objects.filter(target=sqlite_target).count() == 1
    refused = AuditEvent.objects.get(action="backup.run", outcome="refused")
    assert refused.username == "web:olga" and refused.object_id == str(sqlite_target.pk)
    assert run_target_backup(sqlite_target.pk, initiated_by="cli:root") is not None  # the server's own


def test_it_keeps_backups_of_backupsites_own_catalog_for_administrators(db, settings):
    # The catalog holds every user's password hash and the audit log.
    catalog = target("catalog")
    own = settings.DATABASES["default"]
    if connection.vendor == "postgresql":  # the suite's PostgreSQL pass (BACKUPSITE_TEST_CATALOG)
        catalog.engine, catalog.host, catalog.port = "postgresql", own["HOST"], int(own["PORT"])
    catalog.database = own["NAME"]
    catalog.save()
    restorer = user_with("Restorer")
    assert can(restorer, "view", catalog) and can(restorer, "verify", catalog)
    assert not any(can(restorer, action, catalog) for action in ("download", "restore", "preview"))
    assert can(restorer, "download", target("other-db"))
    administrator = user_with("Administrator")
    assert all(can(administrator, action, catalog) for action in ("download", "restore", "preview"))


def test_it_edits_a_local_users_tag_grants_on_the_users_page(admin_client):
    user = User.objects.create_user("lucy", is_staff=True)
    page = admin_client.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert "Roles on the targets of a tag" in page
    form = admin_client.get(f"/admin/auth/user/{user.pk}/change/").context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "password"}
    data.update(
        {
            "username": "lucy",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "is_staff": "on",
            "is_active": "on",
            "role_grants-TOTAL_FORMS": "1",
            "role_grants-INITIAL_FORMS": "0",
            "role_grants-0-role": "Restorer",
            "role_grants-0-tag": "shop",
        }
    )
    data.pop("groups", None)
    data.pop("user_permissions", None)
    data.pop("last_login", None)
    response = admin_client.post(f"/admin/auth/user/{user.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert list(RoleGrant.objects.filter(user=user).values_list("role", "tag", "source")) == [
        ("Restorer", "shop", "local")
    ]
    shop = target("shop-db", "shop")
    assert can(User.objects.get(pk=user.pk), "restore", shop)


def test_it_shows_a_directorys_grants_read_only(admin_client):
    user = User.objects.create_user("dora", is_staff=True)
    grant = RoleGrant.objects.create(user=user, role=Role.VIEWER, tag="shop", source="ldap")
    assert (
        admin_client.get(f"/admin/backups/rolegrant/{grant.pk}/change/").context["has_change_permission"]
        is False
    )


def change_window_closed(user, action, target):
    """A stand-in for another scheme: no restores into production outside a change window."""
    return not (action == "restore" and target is not None and "production" in (target.tags or []))


def test_it_asks_another_schemes_check_first_which_may_only_refuse(db, settings):
    settings.BACKUPSITE_PERMISSION_CHECK = "tests.test_roles.change_window_closed"
    restorer, viewer = user_with("Restorer"), user_with("Viewer")
    production, staging = target("prod-db", "production"), target("staging-db", "staging")
    assert not can(restorer, "restore", production) and can(restorer, "restore", staging)
    assert not can(viewer, "restore", staging)  # the hook never widens what roles allow
    settings.BACKUPSITE_PERMISSION_CHECK = ""
    assert can(restorer, "restore", production)
