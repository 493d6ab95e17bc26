"""Four-eyes restores: into a protected target one Restorer asks (with a reason), another Restorer
or an Administrator approves, and only then does the restore run; end to end through the web
pages against a real PostgreSQL server, with self-approval, rejection and expiry refused."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backups import services
from backups.models import AuditEvent, Backup, BackupStatus, Notifier, Storage, Target
from restores import approvals
from restores.models import RestoreLog, RestoreStatus
from tests.conftest import pg_target, unique_name
from tests.servers.postgres import PostgresServer

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def person(name: str, role: str) -> Client:
    account = User.objects.create_user(name, password="x", is_staff=True)
    account.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(account)
    return client


@pytest.fixture
def shop(pg_server: PostgresServer, local_storage: Storage) -> tuple[Backup, Target]:
    """A backup of a real PostgreSQL database, and a protected second database to restore into."""
    source = pg_server.create_database(unique_name("shop"))
    pg_server.execute(
        source, "CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 25)"
    )
    backup = services.run_backup(pg_target(pg_server, "shop", source, local_storage))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    protected = pg_target(pg_server, "shop-live", unique_name("shop_live"), local_storage, protected=True)
    pg_server.create_database(protected.database)
    pg_server.execute(protected.database, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (999)")
    return backup, protected


def ask(client: Client, backup: Backup, into: Target, **fields: str):
    data = {"to": str(into.pk), "confirm": into.database, "reason": "INC-42: orders table dropped", **fields}
    return client.post(reverse("restores:restore", args=[backup.pk]), data)


def restores_in(callbacks: list) -> list:
    """The restore tasks among the on-commit callbacks (the audit files append there too)."""
    return [callback for callback in callbacks if "restore_backup_task" in repr(callback)]


def orders(server: PostgresServer, target: Target) -> list[int]:
    return [row[0] for row in server.execute(target.database, "SELECT id FROM orders ORDER BY id")]


def test_it_restores_into_a_protected_target_only_after_a_second_person_approves(
    pg_server, shop, tmp_path: Path, eager_tasks, django_capture_on_commit_callbacks
):
    backup, protected = shop
    channel = tmp_path / "approvals.jsonl"
    Notifier.objects.create(name="ops-file", kind="audit", options={"path": str(channel)}, is_default=True)
    alice, bob = person("alice", "Restorer"), person("bob", "Restorer")

    page = alice.get(reverse("restores:restore", args=[backup.pk]), {"to": protected.pk}).content.decode()
    assert "is protected</strong>" in page and 'name="reason"' in page and "Ask for approval" in page
    with django_capture_on_commit_callbacks(execute=True) as queued:
        response = ask(alice, backup, protected)
    assert not restores_in(queued)  # nothing runs on a request
    log = RestoreLog.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("restores:decide", args=[log.pk])
    assert (log.status, log.initiated_by, log.reason) == (
        RestoreStatus.AWAITING,
        "web:alice",
        "INC-42: orders table dropped",
    )
    assert orders(pg_server, protected) == [999]  # untouched
    told = [json.loads(line) for line in channel.read_text().splitlines()]
    assert any(entry.get("event") == "restore_requested" for entry in told), told

    # The requester cannot approve their own request: no button, and the POST is refused.
    assert "Approve and restore" not in alice.get(response["Location"]).content.decode()
    refused = alice.post(response["Location"], {"decision": "approve"})
    assert "another Restorer or an Administrator must approve it" in refused.content.decode()
    assert RestoreLog.objects.get().status == RestoreStatus.AWAITING

    # A viewer may look but not decide.
    viewer = person("victor", "Viewer")
    assert "Approve and restore" not in viewer.get(response["Location"]).content.decode()
    assert viewer.post(response["Location"], {"decision": "approve"}).status_code == 403

    with django_capture_on_commit_callbacks(execute=True) as queued:
        approved = bob.post(response["Location"], {"decision": "approve", "note": "checked with alice"})
    assert approved.status_code == 302 and len(restores_in(queued)) == 1
    log.refresh_from_db()
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert (log.decided_by, log.confirmed_by, log.decision_note) == (
        "web:bob",
        "web:bob",
        "checked with alice",
    )
    assert orders(pg_server, protected) == list(range(1, 26))
    actions = list(
        AuditEvent.objects.filter(action__startswith="restore.")
        .order_by("id")
        .values_list("action", "username", "outcome")
    )
    assert actions == [
        ("restore.request", "alice", "success"),
        ("restore.approve", "alice", "refused"),
        ("restore.approve", "victor", "refused"),
        ("restore.approve", "bob", "success"),
        ("restore.start", "bob", "success"),
        ("restore.result", "web:bob", "success"),
    ]


def test_it_refuses_a_request_without_a_reason_or_the_typed_name(shop):
    backup, protected = shop
    alice = person("alice", "Restorer")
    assert "say why it must be restored" in ask(alice, backup, protected, reason=" ").content.decode()
    assert "exactly to confirm" in ask(alice, backup, protected, confirm="shop").content.decode()
    assert not RestoreLog.objects.exists()


def test_it_lets_a_request_expire_unapproved(pg_server, shop, settings):
    backup, protected = shop
    settings.BACKUPSITE_RESTORE_APPROVAL_HOURS = 2
    log = approvals.request_approval(
        backup, protected, typed=protected.database, by="web:alice", reason="drill"
    )
    assert log.expires_at is not None
    later = log.expires_at + timedelta(seconds=1)
    with pytest.raises(approvals.RestoreRefused, match=r"expired .* unapproved; ask again"):
        approvals.approve(log.pk, by="web:bob", now=later)
    log.refresh_from_db()
    assert log.status == RestoreStatus.EXPIRED and log.completed_at is not None
    expired = AuditEvent.objects.get(action="restore.expire")
    assert (expired.object_id, expired.details["requested_by"]) == (str(log.pk), "web:alice")
    assert orders(pg_server, protected) == [999]
    # Through the page, an expired request offers no decision.
    page = person("bob", "Restorer").get(reverse("restores:decide", args=[log.pk])).content.decode()
    assert "Expired unapproved" in page and "Approve and restore" not in page


def test_it_records_a_rejection_and_refuses_to_approve_it_afterwards(shop):
    backup, protected = shop
    log = approvals.request_approval(
        backup, protected, typed=protected.database, by="web:alice", reason="drill"
    )
    carol = person("carol", "Administrator")
    response = carol.post(
        reverse("restores:decide", args=[log.pk]), {"decision": "reject", "note": "not now"}
    )
    assert response.status_code == 302
    log.refresh_from_db()
    assert (log.status, log.decided_by, log.decision_note) == (RestoreStatus.REJECTED, "web:carol", "not now")
    with pytest.raises(approvals.RestoreRefused, match="is rejected, not awaiting a decision"):
        approvals.approve(log.pk, by="web:bob", now=timezone.now())


def test_it_lets_the_requester_withdraw_but_not_a_stranger_reject(shop):
    backup, protected = shop
    log = approvals.request_approval(
        backup, protected, typed=protected.database, by="web:alice", reason="drill"
    )
    operator = person("oscar", "Operator")
    assert operator.post(reverse("restores:decide", args=[log.pk]), {"decision": "reject"}).status_code == 403
    alice = person("alice", "Restorer")
    assert alice.post(reverse("restores:decide", args=[log.pk]), {"decision": "reject"}).status_code == 302
    log.refresh_from_db()
    assert log.status == RestoreStatus.REJECTED and log.decided_by == "web:alice"


def test_it_treats_the_same_name_through_another_channel_as_the_same_person(shop):
    backup, protected = shop
    log = approvals.request_approval(
        backup, protected, typed=protected.database, by="web:Alice", reason="drill"
    )
    with pytest.raises(approvals.RestoreRefused, match="you asked for restore"):
        approvals.approve(log.pk, by="cli:alice")


def test_it_refuses_an_approved_restore_when_the_approver_lost_the_role_before_it_started(pg_server, shop):
    from restores.tasks import restore_backup_task

    backup, protected = shop
    person("alice", "Restorer")
    bob = User.objects.create_user("bob", is_staff=True)
    bob.groups.add(Group.objects.get(name="Restorer"))
    log = approvals.request_approval(
        backup, protected, typed=protected.database, by="web:alice", reason="drill"
    )
    approvals.approve(log.pk, by="web:bob")
    bob.groups.clear()
    assert restore_backup_task(log.pk) == RestoreStatus.FAILED
    log.refresh_from_db()
    assert (
        log.status == RestoreStatus.FAILED
        and "web:bob may no longer restore into shop-live" in log.error_message
    )
    assert orders(pg_server, protected) == [999]
    assert AuditEvent.objects.filter(action="restore.start", outcome="refused", username="web:bob").exists()


def test_it_refuses_a_command_line_restore_into_a_protected_target_without_break_glass(
    sqlite_target, copy_target
):
    from django.core.management import CommandError, call_command

    from tests.conftest import digest

    backup = services.run_backup(sqlite_target)
    copy_target.protected = True
    copy_target.save()
    before = digest(Path(copy_target.database))
    with pytest.raises(CommandError) as caught:
        call_command("backup_restore", "--id", str(backup.pk), "--to", copy_target.name, "--yes")
    assert caught.value.returncode == 2 and "app-db-copy is protected" in str(caught.value)
    assert "--break-glass REASON" in str(caught.value)
    assert digest(Path(copy_target.database)) == before and not RestoreLog.objects.exists()

    call_command(
        "backup_restore",
        "--id",
        str(backup.pk),
        "--to",
        copy_target.name,
        "--yes",
        "--break-glass",
        "INC-7 outage",
    )
    assert RestoreLog.objects.get().status == RestoreStatus.SUCCESS
    glass = AuditEvent.objects.get(action="restore.start", details__break_glass="INC-7 outage")
    assert glass.auth_method == "cli" and glass.username.startswith("cli")


def test_it_lists_requests_on_the_dashboard_of_those_who_may_decide(shop):
    backup, protected = shop
    log = approvals.request_approval(
        backup, protected, typed=protected.database, by="web:alice", reason="drill"
    )
    link = reverse("restores:decide", args=[log.pk])
    assert link in person("bob", "Restorer").get("/admin/").content.decode()
    assert "Awaiting your decision" in person("carol", "Administrator").get("/admin/").content.decode()
    assert link not in person("oscar", "Operator").get("/admin/").content.decode()


def test_it_hides_an_expired_request_from_the_dashboard_and_leaves_its_expiry_to_the_watch(shop):
    backup, protected = shop
    log = approvals.request_approval(
        backup, protected, typed=protected.database, by="web:alice", reason="drill"
    )
    RestoreLog.objects.filter(pk=log.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    page = person("bob", "Restorer").get("/admin/").content.decode()
    assert reverse("restores:decide", args=[log.pk]) not in page
    # A page only reads: the request is still AWAITING, no audit row was written by the GET.
    log.refresh_from_db()
    assert log.status == RestoreStatus.AWAITING
    assert not AuditEvent.objects.filter(action="restore.expire").exists()
    assert services.reap_lost_work() >= 1
    log.refresh_from_db()
    assert log.status == RestoreStatus.EXPIRED
    assert AuditEvent.objects.filter(action="restore.expire", object_id=str(log.pk)).count() == 1
