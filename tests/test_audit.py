"""The audit log: logins (and failed ones, without the password) and logouts through the real
admin form, the operations of the web pages, admin changes by field name only, users and roles,
config apply; append-only in the model and in the database (SQLite here, PostgreSQL on a real
server); the audit notifier's file; audit_export; the client's address behind trusted proxies."""

from __future__ import annotations

import getpass
import json
import logging
import os
import subprocess
import sys
import urllib.parse
from datetime import timedelta
from io import StringIO

import psycopg
import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from backups import audit, services
from backups.access.proxies import client_address, parse_networks, trusted_networks_from_env
from backups.audit import receivers
from backups.models import AppendOnlyError, AuditEvent, Notifier, Storage, Target
from tests.conftest import REPO, unique_name
from tests.servers.postgres import PostgresServer
from tests.test_admin_forms import change_url, target_form

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]

PASSWORD = "Corr3ct-horse:battery"


@pytest.fixture
def alice() -> User:
    """A staff user who may run backups but not verify them."""
    user = User.objects.create_user("alice", password=PASSWORD, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_target", "run_backup"]))
    return user


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def stored_text() -> str:
    """Every stored field of every event, as one string to search for what must not be there."""
    rows = AuditEvent.objects.values_list(
        "username", "auth_method", "address", "action", "object_type", "object_id", "object_repr", "details"
    )
    return json.dumps(list(rows), default=str)


# -- logins ---------------------------------------------------------------------------------------


def test_it_records_a_login_a_failed_login_and_a_logout_through_the_admin_form(client, alice):
    response = client.post("/admin/login/", {"username": "alice", "password": "not-" + PASSWORD})
    assert response.status_code == 200  # the form again, with its error
    response = client.post("/admin/login/", {"username": "alice", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302
    assert client.post("/admin/logout/").status_code == 200

    (failure,) = events("login.failure")
    assert (failure.user, failure.username, failure.outcome) == (None, "alice", "failure")
    assert (failure.auth_method, failure.address) == ("none", "127.0.0.1")
    (success,) = events("login.success")
    assert (success.user, success.username, success.outcome) == (alice, "alice", "success")
    assert (success.auth_method, success.address) == ("local", "127.0.0.1")  # ModelBackend
    (logout,) = events("logout")
    assert (logout.user, logout.username, logout.auth_method) == (alice, "alice", "local")
    assert PASSWORD not in stored_text()
    # alice's creation only: last_login, saved at the login, is not a change of the user
    assert [event.details["change"] for event in events("user.change")] == ["added"]


def test_it_names_a_login_mode_that_marks_the_session(rf, alice):
    request = rf.get("/")
    request.user = alice
    request.session = {"backupsite_auth_method": "oidc"}
    event = audit.record("login.success", request=request)
    assert event.auth_method == "oidc"
    request.session = {"_auth_user_backend": "django_auth_ldap.backend.LDAPBackend"}
    assert audit.record("login.success", request=request).auth_method == "ldap"


def test_it_refuses_an_unknown_action_or_outcome():
    with pytest.raises(ValueError, match=r"unknown audit action 'backup\.runn'"):
        audit.record("backup.runn")
    with pytest.raises(ValueError, match="unknown audit outcome 'ok'"):
        audit.record("backup.run", outcome="ok")


# -- the operations of the web pages ----------------------------------------------------------------


def test_it_records_run_now_and_a_refused_verify(client, alice, sqlite_target, eager_tasks):
    client.force_login(alice)
    assert client.post(f"/backups/targets/{sqlite_target.pk}/run/").status_code == 302
    (run,) = events("backup.run")
    assert (run.username, run.outcome, run.auth_method, run.address) == ("alice", "success", "local", "127.0.0.1")  # fmt: skip
    assert (run.object_type, run.object_id, run.object_repr) == ("backups.target", str(sqlite_target.pk), "app-db")  # fmt: skip

    backup = sqlite_target.backups.get()
    assert client.post(f"/backups/{backup.pk}/verify/").status_code == 403
    (refused,) = events("backup.verify")
    assert (refused.username, refused.outcome) == ("alice", "refused")
    assert (refused.object_type, refused.object_id) == ("backups.backup", str(backup.pk))


def test_it_records_a_refused_run_now(client, sqlite_target):
    viewer = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    client.force_login(viewer)
    assert client.post(f"/backups/targets/{sqlite_target.pk}/run/").status_code == 403
    (refused,) = events("backup.run")
    assert (refused.user, refused.outcome, refused.object_id) == (viewer, "refused", str(sqlite_target.pk))
    assert refused.object_label == f"backups.target {sqlite_target.pk} ({sqlite_target.name})"
    assert not sqlite_target.backups.exists()


def test_it_records_a_download_with_its_storage_and_method(admin_client, sqlite_target):
    backup = services.run_backup(sqlite_target)
    response = admin_client.get(f"/backups/{backup.pk}/download/")
    assert response.status_code == 200
    (download,) = events("backup.download")
    assert (download.username, download.object_id, download.outcome) == ("admin", str(backup.pk), "success")
    assert download.details == {"storage": "local", "method": "stream"}
    assert download.address == "127.0.0.1"  # from the request being served (the middleware)


def test_it_records_refused_restores(client, sqlite_target, copy_target):
    backup = services.run_backup(sqlite_target)
    nobody = User.objects.create_user("nobody", password=PASSWORD, is_staff=True)
    client.force_login(nobody)
    assert client.get(f"/restores/backups/{backup.pk}/restore/").status_code == 403
    restorer = User.objects.create_user("restorer", password=PASSWORD, is_staff=True)
    restorer.user_permissions.add(Permission.objects.get(codename="restore_backup"))
    client.force_login(restorer)
    response = client.post(
        f"/restores/backups/{backup.pk}/restore/", {"to": copy_target.pk, "confirm": "not its name"}
    )
    assert response.status_code == 200  # the page again, with the reason
    refusals = [(e.username, e.outcome, e.object_id, e.details) for e in events("restore.start")]
    assert refusals == [
        ("nobody", "refused", str(backup.pk), {"reason": "you may not restore backups of app-db"}),
        (
            "restorer",
            "refused",
            str(backup.pk),
            {"reason": "type app-db-copy exactly to confirm; nothing was restored"},
        ),
    ]


# -- admin changes, users and roles -------------------------------------------------------------------


def test_it_records_an_admin_change_of_a_target_by_field_names_only(admin_client, sqlite_target, monkeypatch):
    monkeypatch.setenv("AUDIT_TARGET_PASSWORD", "the-secret-itself")
    form = target_form(sqlite_target, host="db.internal.example", password="${AUDIT_TARGET_PASSWORD}")
    response = admin_client.post(change_url(sqlite_target), form)
    assert response.status_code == 302, response.context["adminform"].form.errors

    (change,) = events("config.change")
    assert (change.username, change.auth_method, change.address) == ("admin", "local", "127.0.0.1")
    assert (change.object_type, change.object_id, change.object_repr) == (
        "backups.target", str(sqlite_target.pk), "app-db",
    )  # fmt: skip
    assert change.details["model"] == "backups.target" and change.details["change"] == "changed"
    assert {"Host", "Password"} <= set(change.details["fields"])
    text = stored_text()
    assert "db.internal.example" not in text and "AUDIT_TARGET_PASSWORD" not in text
    assert "the-secret-itself" not in text


def test_it_records_deletions_through_the_admin_one_or_several(admin_client, tmp_path):
    storages = [
        Storage.objects.create(name=name, kind="local", options={"path": str(tmp_path / name)})
        for name in ("one", "two", "three")
    ]
    response = admin_client.post(f"/admin/backups/storage/{storages[0].pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    # The changelist's action: Django bulk-creates the LogEntry rows (no signal) for several.
    response = admin_client.post(
        "/admin/backups/storage/",
        {"action": "delete_selected", "_selected_action": [s.pk for s in storages[1:]], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Storage.objects.exists()
    deleted = events("object.delete")
    assert sorted((e.object_repr, e.username, e.details["model"]) for e in deleted) == [
        ("one", "admin", "backups.storage"),
        ("three", "admin", "backups.storage"),
        ("two", "admin", "backups.storage"),
    ]


def test_it_records_user_and_role_changes_without_the_password_hash():
    bob = User.objects.create_user("bob", password="first-" + PASSWORD)
    bob.set_password("second-" + PASSWORD)
    bob.save()
    operators = Group.objects.create(name="Operators of the audit test")
    operators.permissions.add(Permission.objects.get(codename="run_backup"))
    bob.groups.add(operators)
    bob.groups.remove(operators)
    bob.delete()

    users = [(e.object_repr, e.details) for e in events("user.change")]
    assert users == [
        ("bob", {"change": "added", "staff": False, "superuser": False}),
        ("bob", {"change": "changed", "fields": ["password"]}),
        ("bob", {"change": "deleted"}),
    ]
    mine = ("Operators of the audit test", "bob")  # the role groups made at migrate have events too
    roles = [(e.object_repr, e.details) for e in events("role.change") if e.object_repr in mine]
    assert roles == [
        ("Operators of the audit test", {"change": "added"}),
        ("Operators of the audit test", {"relation": "group.permissions", "added": ["backups.run_backup"]}),
        ("bob", {"relation": "user.groups", "added": ["Operators of the audit test"]}),
        ("bob", {"relation": "user.groups", "removed": ["Operators of the audit test"]}),
    ]
    text = stored_text()
    assert "md5$" not in text and PASSWORD not in text
    assert all(event.user is None and event.auth_method == "system" for event in events("user.change"))


def test_it_keeps_the_events_of_a_deleted_user_with_the_name(alice):
    event = audit.record("backup.run", user=alice)
    alice.delete()  # SET_NULL: the one update the triggers allow
    event = AuditEvent.objects.get(pk=event.pk)
    assert (event.user, event.username) == (None, "alice")


# -- append-only -----------------------------------------------------------------------------------


def test_it_refuses_to_change_or_delete_an_event_in_the_model(alice):
    event = audit.record("backup.run", user=alice)
    event.action = "backup.verify"
    with pytest.raises(AppendOnlyError, match="append-only"):
        event.save()
    with pytest.raises(AppendOnlyError, match="append-only"):
        event.delete()
    with pytest.raises(AppendOnlyError, match="append-only"):
        AuditEvent.objects.filter(pk=event.pk).update(action="backup.verify")
    with pytest.raises(AppendOnlyError, match="append-only"):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "backup.run"


def test_it_refuses_update_and_delete_in_the_sqlite_database(alice):
    event = audit.record("backup.run", user=alice)
    statements = [
        ("UPDATE backup_audit_event SET action = 'backup.verify' WHERE id = %s", [event.pk]),
        ("UPDATE backup_audit_event SET user_id = NULL, username = 'mallory' WHERE id = %s", [event.pk]),
        ("UPDATE backup_audit_event SET user_id = %s WHERE id = %s", [alice.pk + 1000, event.pk]),
        ("DELETE FROM backup_audit_event WHERE id = %s", [event.pk]),
    ]
    for sql, params in statements:
        with (
            pytest.raises(IntegrityError, match="audit events are append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, params)
    assert AuditEvent.objects.filter(pk=event.pk, action="backup.run", username="alice").exists()


# Committed, as flush runs: inside a test transaction PostgreSQL refuses to TRUNCATE a table with
# the pending (deferred) foreign key checks of the event just written.
@pytest.mark.django_db(transaction=True)
def test_it_lets_flush_empty_the_database_and_keeps_the_triggers(alice):
    audit.record("backup.run", user=alice)
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.filter(action="backup.run").exists()
    event = audit.record("backup.run")
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM backup_audit_event WHERE id = %s", [event.pk])


@pytest.mark.slow
def test_it_refuses_update_and_delete_in_postgresql(pg_server: PostgresServer, tmp_path):
    """The real migrations on a real PostgreSQL catalog, then SQL straight to the server."""
    database = pg_server.create_database(unique_name("audit"))
    try:
        password = urllib.parse.quote(pg_server.password, safe="")
        url = f"postgres://{pg_server.user}:{password}@{pg_server.host}:{pg_server.port}/{database}"
        env = {**os.environ, "DATABASE_URL": url, "BACKUPSITE_HOME": str(tmp_path / "home")}
        env["DJANGO_SETTINGS_MODULE"] = "backupsite.settings"
        result = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "migrate", "--noinput", "-v0"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        with pg_server.connect(database) as db:
            db.execute(
                "INSERT INTO backup_audit_event (created_at, username, auth_method, action, object_type,"
                " object_id, object_repr, outcome, details) VALUES (now(), 'alice', 'local', 'backup.run',"
                " '', '', '', 'success', '{}')"
            )
            for sql in (
                "UPDATE backup_audit_event SET action = 'backup.verify'",
                "UPDATE backup_audit_event SET user_id = NULL, username = 'mallory'",
                "DELETE FROM backup_audit_event",
            ):
                with pytest.raises(psycopg.errors.RestrictViolation, match="audit events are append-only"):
                    db.execute(sql)
            db.execute("UPDATE backup_audit_event SET user_id = NULL")  # what deleting a user does
            kept = db.execute("SELECT user_id FROM backup_audit_event WHERE username = 'alice'").fetchall()
            assert kept == [(None,)]
    finally:
        pg_server.drop_database(database)


# -- the audit notifier's file ----------------------------------------------------------------------


def test_it_appends_the_same_event_to_the_audit_notifier_file(
    rf, alice, tmp_path, django_capture_on_commit_callbacks
):
    path = tmp_path / "logs" / "audit.jsonl"
    Notifier.objects.create(name="audit-file", kind="audit", options={"path": str(path)})
    off = tmp_path / "off.jsonl"
    Notifier.objects.create(name="off", kind="audit", options={"path": str(off)}, is_active=False)
    request = rf.post("/backups/targets/1/run/", REMOTE_ADDR="10.9.8.7")
    request.user = alice
    request.session = {"_auth_user_backend": "django.contrib.auth.backends.ModelBackend"}
    with django_capture_on_commit_callbacks(execute=True):
        event = audit.record(
            "backup.run", request=request, obj=Target(pk=1), details={"token": "abc", "deep": True}
        )
    (line,) = path.read_text().splitlines()
    written = json.loads(line)
    assert (written["id"], written["event"], written["created_at"]) == (
        f"audit-{event.pk}", "backup.run", event.created_at.isoformat(timespec="seconds"),
    )  # fmt: skip
    assert written["fields"] == {
        "id": str(event.pk), "user": "alice", "auth_method": "local", "address": "10.9.8.7",
        "action": "backup.run", "object_type": "backups.target", "object_id": "1", "object": "",
        "outcome": "success", "details": '{"deep": true, "token": "********"}',
    }  # fmt: skip
    assert event.details == {"token": "********", "deep": True}
    assert not off.exists()


def test_it_keeps_the_event_when_the_audit_file_cannot_be_written(
    alice, tmp_path, caplog, django_capture_on_commit_callbacks
):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    unwritable = tmp_path / "blocker" / "a.jsonl"
    Notifier.objects.create(name="broken", kind="audit", options={"path": str(unwritable)})
    with (
        caplog.at_level(logging.ERROR, logger="backups.audit"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        event = audit.record("backup.run", user=alice)
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    assert f"audit event {event.pk} (backup.run) not appended to notifier broken" in caplog.text


# -- config apply and audit_export ------------------------------------------------------------------


def test_it_records_config_apply_from_the_command_line(toml_config):
    path = toml_config()
    call_command("backup_config", "apply", str(path), "--skip-probes", stdout=StringIO())
    (applied,) = events("config.apply")
    assert (applied.user, applied.username, applied.auth_method) == (None, f"cli:{getpass.getuser()}", "cli")
    assert applied.details["file"] == str(path) and applied.details["created"] == ["storage local"]


def test_it_exports_the_events_since_a_duration_or_a_date(alice):
    now = timezone.now()
    AuditEvent.objects.create(action="logout", username="old", created_at=now - timedelta(days=40))
    recent = audit.record("backup.run", user=alice, obj=Target(pk=7), details={"deep": False})

    out = StringIO()
    call_command("audit_export", "--since", "30d", "--json", stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    mine = [line for line in lines if line["user"] in ("alice", "old")]
    assert mine == [
        {
            "id": recent.pk, "time": recent.created_at.isoformat(), "user": "alice", "auth_method": "",
            "address": None, "action": "backup.run", "object_type": "backups.target", "object_id": "7",
            "object": "", "outcome": "success", "details": {"deep": False},
        }
    ]  # fmt: skip

    out = StringIO()
    call_command("audit_export", "--since", f"{(now - timedelta(days=41)).date().isoformat()}", stdout=out)
    table = out.getvalue().splitlines()
    assert table[0].split() == ["TIME", "USER", "METHOD", "ADDRESS", "ACTION", "OUTCOME", "OBJECT"]
    assert any(" old " in row and "logout" in row for row in table)
    assert any(" alice " in row and "backups.target 7" in row for row in table)


def test_it_explains_a_bad_since():
    with pytest.raises(CommandError, match=r"--since: '30 days' is neither a duration \(e.g. 30d"):
        call_command("audit_export", "--since", "30 days")
    with pytest.raises(CommandError, match="ISO date"):
        call_command("audit_export", "--since", "2026-13-01")


def test_it_parses_since_as_a_duration_or_an_iso_date(settings):
    now = timezone.now()
    assert audit.parse_since("12h", now) == now - timedelta(hours=12)
    assert audit.parse_since("2026-01-31T08:00+02:00").isoformat() == "2026-01-31T08:00:00+02:00"
    assert timezone.is_aware(audit.parse_since("2026-01-31"))


# -- the admin --------------------------------------------------------------------------------------


def test_it_shows_the_audit_log_read_only_even_to_a_superuser(admin_client, alice):
    event = audit.record("backup.run", user=alice, details={"deep": True, "fields": ["Host"]})
    listing = admin_client.get("/admin/backups/auditevent/")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "backup.run" in page and "alice" in page
    assert 'name="action"' not in page  # no actions, not even delete
    detail = admin_client.get(f"/admin/backups/auditevent/{event.pk}/change/").content.decode()
    assert "<pre>{\n  &quot;deep&quot;: true," in detail
    assert admin_client.get("/admin/backups/auditevent/add/").status_code == 403
    assert admin_client.get(f"/admin/backups/auditevent/{event.pk}/delete/").status_code == 403
    admin_client.post(f"/admin/backups/auditevent/{event.pk}/change/", {"action": "logout"})
    assert AuditEvent.objects.get(pk=event.pk).action == "backup.run"
    assert admin_client.get("/admin/backups/auditevent/?q=alice&outcome__exact=success").status_code == 200


# -- the client's address ---------------------------------------------------------------------------


def test_it_believes_x_forwarded_for_only_from_a_trusted_proxy():
    proxies = parse_networks("10.0.0.0/8, 192.168.1.1")
    assert client_address("203.0.113.5", "198.51.100.7", proxies) == "203.0.113.5"  # not a proxy
    assert client_address("10.0.0.2", "198.51.100.7", proxies) == "198.51.100.7"
    # A client's own X-Forwarded-For comes first: the rightmost untrusted hop is the client.
    assert client_address("10.0.0.2", "1.2.3.4, 198.51.100.7, 192.168.1.1", proxies) == "198.51.100.7"
    assert client_address("10.0.0.2", "10.0.0.9, 10.0.0.3", proxies) == "10.0.0.9"  # every hop trusted
    assert client_address("10.0.0.2", "garbage", proxies) == "10.0.0.2"
    assert client_address("10.0.0.2", "198.51.100.7:5050", proxies) == "198.51.100.7"
    assert client_address("10.0.0.2", "[2001:db8::1]:443", proxies) == "2001:db8::1"
    assert client_address("::ffff:10.0.0.2", "198.51.100.7", proxies) == "198.51.100.7"
    assert client_address("10.0.0.2", None, proxies) == "10.0.0.2"
    assert client_address(None, "198.51.100.7", proxies) is None
    assert client_address("10.0.0.2", "198.51.100.7", ()) == "10.0.0.2"  # the default: no proxy


def test_it_reads_the_trusted_proxies_from_the_environment():
    assert trusted_networks_from_env({}) == ()
    assert [str(n) for n in trusted_networks_from_env({"BACKUPSITE_TRUSTED_PROXIES": "10.0.0.0/8,::1"})] == [
        "10.0.0.0/8",
        "::1/128",
    ]
    with pytest.raises(
        ImproperlyConfigured, match=r"BACKUPSITE_TRUSTED_PROXIES: 'proxy\.local' is not an address"
    ):
        trusted_networks_from_env({"BACKUPSITE_TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"})


def test_it_records_the_address_behind_a_trusted_proxy_only(client, alice, settings):
    form = {"username": "alice", "password": PASSWORD}
    client.post("/admin/login/", form, REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="198.51.100.7")
    settings.BACKUPSITE_TRUSTED_PROXIES = parse_networks("127.0.0.0/8")
    client.post("/admin/login/", form, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert [event.address for event in events("login.success")] == ["203.0.113.5", "198.51.100.7"]


def test_it_connects_the_receivers_once():
    receivers.connect_receivers()  # ready() already did: dispatch_uid keeps one connection each
    User.objects.create_user("carol")
    assert len(events("user.change")) == 1


def test_it_masks_the_values_of_keys_that_name_a_secret():
    details = {"password": "x" * 8, "fields": ["password"], "nested": {"api_key": "k" * 8}}
    event = audit.record("config.apply", username="cli:test", auth_method="cli", details=details)
    assert event.details == {
        "password": "********",
        "fields": ["password"],
        "nested": {"api_key": "********"},
    }
