"""Who hears about what: channel selection, failure isolation, Notification rows, the events of
real runs (a failed backup mailed through a real SMTP server, a lost worker, a failed verify, a
restore), the TOML ``[notifiers.NAME]`` tables and the admin."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from backups import notifications, services
from backups.config import loader as config
from backups.models import Backup, BackupStatus, Notification, Notifier, Target
from restores.services import restore_backup
from schedules.models import BackupSchedule
from schedules.requests import info_for
from tests.config_builder import toml_text
from tests.servers import free_port
from tests.servers.http_receiver import HTTPReceiver
from tests.servers.smtp import SMTPServer

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]

FAST = [0.01]


def audit(tmp_path: Path, name: str, **fields: Any) -> Notifier:
    return Notifier.objects.create(
        name=name, kind="audit", options={"path": str(tmp_path / f"{name}.jsonl")}, **fields
    )


def lines(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def schedule_for(target: Target, **fields: Any) -> BackupSchedule:
    return BackupSchedule.objects.create(name="nightly", target=target, cron_expression="0 3 * * *", **fields)


def send(event: str = "backup_failed", **kwargs: Any) -> list[Notification]:
    if isinstance(kwargs.get("schedule"), BackupSchedule):
        kwargs["schedule"] = info_for(kwargs["schedule"])
    return notifications.notify(event, subject="Something happened", text="details", **kwargs)


def test_it_uses_the_default_channels_that_want_the_event(tmp_path):
    audit(tmp_path, "ops", is_default=True)
    audit(tmp_path, "everything", is_default=True, events=list(notifications.EVENTS))
    audit(tmp_path, "paused", is_default=True, is_active=False)
    audit(tmp_path, "elsewhere")  # not a default: only schedules that name it

    failed = send("backup_failed", fields={"target": "app-db"})
    assert sorted(n.channel for n in failed) == ["everything", "ops"]
    assert all(n.status == "sent" and n.attempts == 1 and n.sent_at for n in failed)
    assert lines(tmp_path, "ops")[0]["fields"] == {"target": "app-db"}
    # Success is opt-in: only the channel that lists backup_succeeded hears of it.
    assert [n.channel for n in send("backup_succeeded")] == ["everything"]
    assert lines(tmp_path, "paused") == [] and lines(tmp_path, "elsewhere") == []


def test_it_replaces_the_defaults_with_a_schedules_channels(tmp_path, sqlite_target):
    audit(tmp_path, "ops", is_default=True)
    audit(tmp_path, "team")
    audit(tmp_path, "quiet", events=["missed"])
    schedule = schedule_for(sqlite_target, notify_channels=["team", "quiet", "gone"])

    rows = send("backup_failed", schedule=schedule)
    assert [(n.channel, n.status) for n in rows] == [("team", "sent"), ("gone", "failed")]
    gone = rows[1]
    assert gone.error_message == "no notifier named 'gone'; schedule nightly names it in notify"
    assert gone.notifier is None and gone.attempts == 0 and gone.schedule == schedule
    assert [n.channel for n in send("missed", schedule=schedule)] == ["team", "quiet", "gone"]
    assert lines(tmp_path, "ops") == []
    # A missing channel is not worth a failure on every successful run.
    assert send("backup_succeeded", schedule=schedule) == []


def test_it_records_a_failing_channel_and_still_delivers_to_the_others(
    tmp_path, sqlite_target, receiver: HTTPReceiver, smtp_server: SMTPServer, monkeypatch
):
    monkeypatch.setenv("TEST_HOOK_URL", receiver.url())
    receiver.fail_next(10, status=502)
    Notifier.objects.create(
        name="hook",
        kind="webhook",
        options={"url": "${TEST_HOOK_URL}", "retry_delays": FAST},
        is_default=True,
    )
    audit(tmp_path, "ops", is_default=True)
    schedule = schedule_for(sqlite_target, notification_email="dba@example.net, oncall@example.net")

    rows = send("backup_failed", schedule=schedule, target=sqlite_target)
    by_channel = {n.channel: n for n in rows}
    assert set(by_channel) == {"hook", "ops", "notification_email"}
    hook = by_channel["hook"]
    assert (hook.status, hook.attempts) == ("failed", 2)
    where = f"webhook notifier hook: POST to 127.0.0.1:{receiver.port}"
    assert hook.error_message == f"{where}: HTTP 502 receiver failure (after 2 attempts)"
    assert by_channel["ops"].status == "sent" and len(lines(tmp_path, "ops")) == 1
    assert by_channel["notification_email"].status == "sent"
    assert smtp_server.messages[0].recipients == ["dba@example.net", "oncall@example.net"]
    assert all(n.target == sqlite_target and n.schedule == schedule for n in rows)
    assert Notification.objects.filter(status="failed").count() == 1


def test_it_sends_the_schedule_email_alerts_but_not_successes(sqlite_target, smtp_server: SMTPServer):
    schedule = schedule_for(sqlite_target, notification_email="dba@example.net")
    assert [n.kind for n in send("missed", schedule=schedule)] == ["email"]
    assert send("backup_succeeded", schedule=schedule) == []
    assert send("restore_finished", schedule=schedule) == []
    assert len(smtp_server.messages) == 1


def test_it_keeps_secret_urls_out_of_rows_and_logs(tmp_path, receiver: HTTPReceiver, monkeypatch, caplog):
    token = "xoxb-T0KEN-9f8e7d6c5b4a"
    secret_url = receiver.url(f"/services/{token}")
    monkeypatch.setenv("TEST_SLACK_URL", secret_url)
    receiver.answer(403, f"invalid_token for /services/{token}".encode())  # a receiver that echoes it
    Notifier.objects.create(name="chat", kind="slack", options={"url": "${TEST_SLACK_URL}"}, is_default=True)
    closed = f"http://127.0.0.1:{free_port()}/hooks/{token}-2"
    monkeypatch.setenv("TEST_DEAD_URL", closed)
    Notifier.objects.create(
        name="dead", kind="teams", options={"url": "${TEST_DEAD_URL}", "retry_delays": FAST}, is_default=True
    )

    with caplog.at_level(logging.DEBUG):
        rows = send("anomaly")
    assert [n.status for n in rows] == ["failed", "failed"]
    assert "HTTP 403 invalid_token for ********" in rows[0].error_message
    assert "Connection refused" in rows[1].error_message
    texts = [n.error_message for n in rows] + [caplog.text]
    assert not any(token in text or secret_url in text or closed in text for text in texts)
    assert "notification" in caplog.text and "via chat failed" in caplog.text


def test_it_fails_only_the_channel_with_an_unset_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_UNSET_HOOK", raising=False)
    Notifier.objects.create(
        name="hook", kind="webhook", options={"url": "${TEST_UNSET_HOOK}"}, is_default=True
    )
    audit(tmp_path, "ops", is_default=True)
    hook, ops = send()
    assert hook.status == "failed" and hook.attempts == 0
    assert hook.error_message == "webhook notifier hook: environment variable TEST_UNSET_HOOK is not set"
    assert ops.status == "sent"


def test_it_treats_an_unknown_event_as_a_programming_error():
    with pytest.raises(ValueError, match="unknown notification event 'backup_exploded'"):
        send("backup_exploded")


def test_it_mails_and_records_a_real_failed_backup(sqlite_target, sqlite_source, smtp_server: SMTPServer):
    schedule = schedule_for(sqlite_target, notification_email="dba@example.net")
    sqlite_source.unlink()
    backup = services.run_backup(sqlite_target, schedule=info_for(schedule), initiated_by="schedule:nightly")

    assert backup.status == BackupStatus.FAILED
    [row] = Notification.objects.all()
    assert (row.event, row.channel, row.status, row.backup, row.schedule, row.target) == (
        "backup_failed", "notification_email", "sent", backup, schedule, sqlite_target,
    )  # fmt: skip
    [mail] = smtp_server.messages
    assert mail.subject == "[Backupsite] [FAILED] Backup failed: app-db (nightly)"
    assert mail.recipients == ["dba@example.net"]
    assert backup.error_message in mail.body and "does not exist" in mail.body
    assert "schedule: nightly" in mail.body and "initiated by: schedule:nightly" in mail.body
    step = backup.steps.get(name="notify")
    assert step.status == "success" and step.message == "backup_failed: sent via notification_email"


def test_it_tells_success_only_to_channels_that_ask(
    tmp_path, sqlite_target, receiver: HTTPReceiver, monkeypatch
):
    audit(tmp_path, "ops", is_default=True)
    backup = services.run_backup(sqlite_target)
    assert backup.status == BackupStatus.SUCCESS
    assert not Notification.objects.exists() and not backup.steps.filter(name="notify").exists()

    monkeypatch.setenv("TEST_HOOK_URL", receiver.url())
    Notifier.objects.create(
        name="hook",
        kind="webhook",
        options={"url": "${TEST_HOOK_URL}", "secret": "${TEST_HOOK_URL}"},
        events=["backup_succeeded"],
        is_default=True,
    )
    backup = services.run_backup(sqlite_target)
    body = receiver.requests[0].json()
    assert body["event"] == "backup_succeeded" and body["severity"] == "info"
    assert body["subject"].startswith("Backup succeeded: app-db, ")
    assert body["fields"]["status"] == "success" and body["fields"]["size"].endswith("KiB")
    assert backup.steps.get(name="notify").message == "backup_succeeded: sent via hook"


def test_it_never_changes_the_backups_outcome_for_a_failing_channel(sqlite_target, monkeypatch):
    monkeypatch.setenv("TEST_DEAD_URL", f"http://127.0.0.1:{free_port()}/hook")
    Notifier.objects.create(
        name="dead",
        kind="webhook",
        options={"url": "${TEST_DEAD_URL}", "retry_delays": []},
        events=["backup_succeeded"],
        is_default=True,
    )
    backup = services.run_backup(sqlite_target)
    backup.refresh_from_db()
    assert backup.status == BackupStatus.SUCCESS and backup.error_message == ""
    step = backup.steps.get(name="notify")
    assert step.status == "failed"
    assert step.message.startswith(
        "backup_succeeded: failed: dead (webhook notifier dead: POST to 127.0.0.1:"
    )


def test_it_reports_a_lost_worker_as_a_failed_backup(tmp_path, sqlite_target):
    audit(tmp_path, "ops", is_default=True)
    long_ago = timezone.now() - timedelta(hours=1)
    lost = Backup.objects.create(
        target=sqlite_target,
        backup_name="lost",
        status=BackupStatus.RUNNING,
        started_at=long_ago,
        heartbeat_at=long_ago,
        worker="another-host:4242",
    )
    assert services.reap_stale_runs() == [lost]
    [line] = lines(tmp_path, "ops")
    assert line["event"] == "backup_failed" and "worker lost: no heartbeat" in line["text"]
    assert Notification.objects.get().backup == lost


def test_it_tells_of_a_failed_verification(tmp_path, sqlite_target, storage_dir):
    audit(tmp_path, "ops", is_default=True)
    backup = services.run_backup(sqlite_target)
    stored = storage_dir / backup.copies.get().path
    stored.write_bytes(b"not what was stored")
    outcome = services.verify_backup(backup)
    assert not outcome.ok
    [line] = lines(tmp_path, "ops")
    assert line["event"] == "verification_failed" and line["severity"] == "error"
    assert line["subject"] == f"Verification failed: backup {backup.pk} of app-db"
    assert "checksum" in line["text"] or "bytes" in line["text"]
    assert backup.steps.get(name="notify").message == "verification_failed: sent via ops"


def test_it_tells_of_a_finished_restore(tmp_path, sqlite_target):
    audit(tmp_path, "ops", is_default=True, events=["restore_finished"])
    backup = services.run_backup(sqlite_target)
    log = restore_backup(backup, sqlite_target, initiated_by="admin")
    assert log.status == "success"
    [line] = lines(tmp_path, "ops")
    assert line["event"] == "restore_finished" and line["severity"] == "info"
    assert line["subject"] == f"Restore succeeded: backup {backup.pk} of app-db into app-db"
    assert line["fields"]["status"] == "success" and line["fields"]["initiated by"] == "admin"


def test_it_builds_subject_text_and_fields_in_describe_backup(sqlite_target, settings):
    settings.BACKUPSITE_BASE_URL = "https://backups.example.net/"
    backup = services.run_backup(sqlite_target)
    summary = notifications.describe_backup(backup)
    assert summary.subject.startswith("Backup succeeded: app-db, ")
    assert "in 1 copy" in summary.text
    assert summary.fields["link"] == f"https://backups.example.net/admin/backups/backup/{backup.pk}/change/"
    assert {"target", "backup", "status", "type", "started", "duration", "size"} <= set(summary.fields)
    assert "error" not in summary.fields  # empty values are left out


# -- configuration -------------------------------------------------------------------------------


def apply(tmp_path: Path, text: str, probe: bool = False) -> config.ApplyReport:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.apply(config.load(path), probe=probe)


def errors(tmp_path: Path, text: str, probe: bool = False) -> list[str]:
    with pytest.raises(config.ConfigInvalid) as caught:
        apply(tmp_path, text, probe)
    return caught.value.errors


BASE = toml_text(
    storage_dir="backups",
    targets={"app-db": {"engine": "sqlite", "database": "app.sqlite3", "storages": ["local"]}},
)

NOTIFIERS = toml_text(
    notifiers={
        "ops-hook": {
            "kind": "webhook",
            "url": "${OPS_HOOK_URL}",
            "secret": "${OPS_HOOK_SECRET}",
            "timeout": 5,
            "retry_delays": [1, 5],
            "default": True,
        },
        "audit": {
            "kind": "audit",
            "path": "var/audit.jsonl",
            "events": ["backup_failed", "backup_succeeded", "restore_finished"],
        },
    },
    schedules={"nightly": {"target": "app-db", "cron": "0 3 * * *", "notify": ["ops-hook", "audit"]}},
)


def test_it_applies_notifiers_from_toml_idempotently(tmp_path):
    report = apply(tmp_path, BASE + NOTIFIERS)
    assert {"notifier ops-hook", "notifier audit"} <= set(report.created)
    hook = Notifier.objects.get(name="ops-hook")
    assert (hook.kind, hook.is_default, hook.is_active) == ("webhook", True, True)
    assert hook.options == {
        "url": "${OPS_HOOK_URL}",
        "secret": "${OPS_HOOK_SECRET}",
        "timeout": 5,
        "retry_delays": [1, 5],
    }
    assert hook.events == [e for e in notifications.EVENTS if e != "backup_succeeded"]
    trail = Notifier.objects.get(name="audit")
    assert trail.options == {"path": str(tmp_path / "var" / "audit.jsonl")}  # relative to the file
    assert trail.events == ["backup_failed", "backup_succeeded", "restore_finished"] and not trail.is_default
    assert BackupSchedule.objects.get(name="nightly").notify_channels == ["ops-hook", "audit"]
    again = apply(tmp_path, BASE + NOTIFIERS)
    assert not again.created and not again.updated


def test_it_lets_a_schedule_name_a_notifier_already_in_the_database(tmp_path):
    Notifier.objects.create(name="pager", kind="audit", options={"path": str(tmp_path / "p.jsonl")})
    nightly = {"target": "app-db", "cron": "0 3 * * *", "notify": ["pager"]}
    apply(tmp_path, BASE + toml_text(schedules={"nightly": nightly}))
    assert BackupSchedule.objects.get().notify_channels == ["pager"]


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ('kind = "webhook"', 'kind = "webhok"', "notifiers.ops-hook.kind: unknown notifier kind 'webhok' (did you mean 'webhook'?)"),
        ('url = "${OPS_HOOK_URL}"', 'url = "https://hooks.example.net/T0KEN"', "notifiers.ops-hook.url: write secrets as ${ENV_VAR} or ${file:/path}; plaintext secrets are refused"),
        ("timeout = 5", 'timeout = "5"', "notifiers.ops-hook.timeout: must be a number"),
        ("timeout = 5", "timeout = 5\ncolour = 1", "notifiers.ops-hook.colour: unknown key"),
        ('"restore_finished"]', '"restore_done"]', "notifiers.audit.events: unknown event 'restore_done'"),
        ("default = true", 'default = "yes"', "notifiers.ops-hook.default: must be true or false"),
        ('notify = ["ops-hook", "audit"]', 'notify = ["ops-hok"]', "schedules.nightly.notify: no notifier named 'ops-hok' (did you mean 'ops-hook'?)"),
    ],
)  # fmt: skip
def test_it_reports_bad_notifier_tables_as_errors_naming_the_key(tmp_path, replace, by, expected):
    assert replace in NOTIFIERS
    found = errors(tmp_path, BASE + NOTIFIERS.replace(replace, by))
    assert any(line.startswith(expected) for line in found), found
    assert not Notifier.objects.exists()


def test_it_checks_that_secrets_resolve_in_probes(tmp_path, monkeypatch, sqlite_source):
    monkeypatch.delenv("OPS_HOOK_URL", raising=False)
    monkeypatch.setenv("OPS_HOOK_SECRET", "k3y")
    text = BASE.replace("app.sqlite3", str(sqlite_source)) + NOTIFIERS
    found = errors(tmp_path, text, probe=True)
    assert "notifiers.ops-hook.url: environment variable OPS_HOOK_URL is not set" in found


# -- admin ---------------------------------------------------------------------------------------


def test_it_lists_channels_and_deliveries_in_the_admin(admin_client, tmp_path, sqlite_target, sqlite_source):
    audit(tmp_path, "ops", is_default=True)
    sqlite_source.unlink()
    services.run_backup(sqlite_target)
    row = Notification.objects.get()
    assert admin_client.get("/admin/backups/notifier/").status_code == 200
    assert admin_client.get("/admin/backups/notifier/add/").status_code == 200
    page = admin_client.get("/admin/backups/notification/?status__exact=sent").content.decode()
    assert "ops" in page and "Sent" in page
    detail = admin_client.get(f"/admin/backups/notification/{row.pk}/change/")
    assert detail.status_code == 200 and row.subject in detail.content.decode()
    assert admin_client.get(f"/admin/backups/notification/{row.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/backups/notification/add/").status_code == 403


def test_it_refuses_plaintext_secrets_and_bad_options_in_the_admin_form(admin_client):
    form = {
        "name": "hook",
        "kind": "webhook",
        "options": json.dumps({"url": "https://hooks.example.net/T0KEN", "retries": 3}),
        "events": json.dumps(["backup_failed"]),
        "is_active": "on",
    }
    page = admin_client.post("/admin/backups/notifier/add/", form).content.decode()
    assert "url: write secrets as ${ENV_VAR}" in page
    assert "retries: unknown option for the webhook notifier kind" in page
    form["options"] = json.dumps({"url": "${HOOK_URL}"})
    form["events"] = json.dumps(["backup_exploded"])
    assert (
        "unknown event(s) backup_exploded"
        in admin_client.post("/admin/backups/notifier/add/", form).content.decode()
    )
    form["events"] = json.dumps(["backup_failed"])
    response = admin_client.post("/admin/backups/notifier/add/", form)
    assert response.status_code == 302
    assert Notifier.objects.get(name="hook").options == {"url": "${HOOK_URL}"}


# -- the outbox: alerts whose sender stopped (real processes: tests/reliability/test_lost_alerts.py)


def pending_row(notifier: Notifier | None, sender: str, age: timedelta, **fields: Any) -> Notification:
    row = Notification.objects.create(
        notifier=notifier,
        channel=notifier.name if notifier is not None else fields.pop("channel"),
        kind=notifier.kind if notifier is not None else "email",
        event="backup_failed",
        subject="Backup failed: app-db",
        text="Backup 7 of app-db failed: disk full",
        fields={"target": "app-db"},
        sender=sender,
        **fields,
    )
    Notification.objects.filter(pk=row.pk).update(created_at=timezone.now() - age)
    row.refresh_from_db()
    return row


def test_it_leaves_another_hosts_pending_alert_alone_until_it_is_stale_then_sends_it(tmp_path, settings):
    settings.BACKUPSITE_NOTIFICATION_RESEND_SECONDS = 600
    ops = audit(tmp_path, "ops", is_default=True)
    row = pending_row(ops, "elsewhere:4242", timedelta(minutes=5))
    assert notifications.send_unsent() == (0, 0, 0)
    assert lines(tmp_path, "ops") == []
    Notification.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=11))
    assert notifications.send_unsent() == (1, 0, 0)
    [line] = lines(tmp_path, "ops")
    assert line["text"] == "Backup 7 of app-db failed: disk full" and line["fields"]["target"] == "app-db"
    assert "the process sending it stopped" in line["fields"]["sent late"]
    row.refresh_from_db()
    assert (row.status, row.sender, row.attempts) == ("sent", "", 1)
    assert notifications.send_unsent() == (0, 0, 0)


def test_it_gives_up_an_alert_a_day_old_and_one_whose_channel_went_away(tmp_path):
    ops = audit(tmp_path, "ops", is_default=True)
    old = pending_row(ops, "", timedelta(days=2))
    muted = audit(tmp_path, "muted", is_default=True)
    disabled = pending_row(muted, "", timedelta(minutes=5))
    Notifier.objects.filter(pk=muted.pk).update(is_active=False)
    deleted = pending_row(None, "", timedelta(minutes=5), channel="gone")
    assert notifications.send_unsent() == (2, 0, 1)  # two tried (and refused), one given up
    for row, reason in (
        (old, "could not be sent within a day"),
        (disabled, "notifier muted was disabled"),
        (deleted, "channel gone no longer exists"),
    ):
        row.refresh_from_db()
        assert row.status == "failed" and reason in row.error_message, row.error_message
    assert lines(tmp_path, "ops") == [] and lines(tmp_path, "muted") == []


def test_it_resends_to_a_schedules_email_addresses(sqlite_target, smtp_server: SMTPServer):
    schedule = schedule_for(sqlite_target, notification_email="dba@example.net")
    pending_row(None, "", timedelta(minutes=5), channel="notification_email", schedule=schedule)
    assert notifications.send_unsent() == (1, 0, 0)
    (mail,) = smtp_server.messages
    assert mail.recipients == ["dba@example.net"] and "disk full" in mail.body


def test_it_keeps_an_interrupted_delivery_pending_for_the_watch(tmp_path, monkeypatch):
    audit(tmp_path, "ops", is_default=True)

    def interrupted(self: Any, message: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("backups.notifiers.audit.AuditNotifier.send", interrupted)
    with pytest.raises(KeyboardInterrupt):
        send()
    row = Notification.objects.get()
    assert row.status == "pending" and row.sender and "the watch sends it" in row.error_message


def test_it_alerts_a_failure_whose_run_stopped_before_its_alert_and_only_once(tmp_path, sqlite_target):
    audit(tmp_path, "ops", is_default=True)
    failed = Backup.objects.create(
        target=sqlite_target, backup_name="lost-alert", status=BackupStatus.RUNNING
    )
    failed.error_message = "disk full"
    failed.finish(BackupStatus.FAILED, timezone.now() - timedelta(minutes=5))
    failed.save()
    assert failed.alert_pending  # recorded FAILED; its process died before the alert
    assert notifications.send_unsent() == (0, 1, 0)
    [line] = lines(tmp_path, "ops")
    assert line["event"] == "backup_failed" and "disk full" in line["text"]
    assert "stopped before saying so" in line["fields"]["sent late"]
    failed.refresh_from_db()
    assert not failed.alert_pending
    assert notifications.send_unsent() == (0, 0, 0)
