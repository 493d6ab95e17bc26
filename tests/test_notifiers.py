"""Each notification channel against a real receiver on loopback: payloads, the webhook's
HMAC signature, retries with backoff, timeouts, Teams cards, the audit file, email over SMTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path

import pytest

from backups.notifiers import NOTIFIER_KINDS, Message, NotifierError, build_notifier, notifier_class
from backups.notifiers.base import scrub
from tests.servers import free_port
from tests.servers.http_receiver import HTTPReceiver
from tests.servers.smtp import SMTPServer

FAST = [0.01, 0.02]


def message(**overrides: object) -> Message:
    values: dict[str, object] = {
        "event": "backup_failed",
        "subject": "Backup failed: app-db (nightly)",
        "text": "Backup 7 of app-db failed: disk full <&>",
        "fields": {"target": "app-db", "backup": "7 (app-db-full)", "error": "disk full"},
        "severity": "error",
    }
    values.update(overrides)
    return Message(**values)  # type: ignore[arg-type]


def webhook(url: str, **options: object):
    return build_notifier("hook", "webhook", {"url": url, "retry_delays": FAST, "timeout": 2, **options})


def test_it_registers_one_class_per_kind():
    for kind in NOTIFIER_KINDS:
        assert notifier_class(kind).kind == kind
    with pytest.raises(NotifierError, match="unknown notifier kind 'pager'"):
        build_notifier("x", "pager", {})


def test_it_posts_the_webhook_message_signed_with_hmac_sha256(receiver: HTTPReceiver):
    secret = "shared-hmac-key-123"
    sent = message()
    assert webhook(receiver.url(), secret=secret).deliver(sent) == 1

    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.headers["X-Backupsite-Event"] == "backup_failed"
    assert request.headers["X-Backupsite-Delivery"] == sent.id
    # The receiver's side: recompute the HMAC of the exact body bytes and compare in constant time.
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Backupsite-Signature"], expected)
    body = request.json()
    assert body["source"] == "backupsite" and body["event"] == "backup_failed"
    assert body["subject"] == sent.subject and body["text"] == sent.text
    assert body["fields"] == sent.fields and body["severity"] == "error"
    assert body["id"] == sent.id and body["created_at"] == sent.created_at


def test_it_does_not_sign_a_webhook_without_a_secret(receiver: HTTPReceiver):
    webhook(receiver.url()).deliver(message())
    assert "X-Backupsite-Signature" not in receiver.requests[0].headers


def test_it_retries_the_webhook_with_backoff_then_succeeds(receiver: HTTPReceiver):
    receiver.fail_next(2, status=503)
    notifier = webhook(receiver.url(), secret="k3y-k3y", retry_delays=[0.1, 0.2])
    started = time.monotonic()
    assert notifier.deliver(message()) == 3
    assert time.monotonic() - started >= 0.3  # waited 0.1 then 0.2
    assert len(receiver.requests) == 3
    # Every attempt is the same delivery: same id, same bytes, same signature.
    assert len({r.body for r in receiver.requests}) == 1
    assert len({r.headers["X-Backupsite-Signature"] for r in receiver.requests}) == 1


def test_it_gives_up_the_webhook_after_the_last_retry(receiver: HTTPReceiver):
    receiver.fail_next(5, status=500)
    notifier = webhook(receiver.url())
    with pytest.raises(NotifierError, match=r"HTTP 500 receiver failure \(after 3 attempts\)"):
        notifier.deliver(message())
    assert notifier.attempts == 3 and len(receiver.requests) == 3


def test_it_does_not_retry_a_client_error(receiver: HTTPReceiver):
    receiver.answer(404, b"no_service")
    notifier = webhook(receiver.url())
    with pytest.raises(NotifierError, match="HTTP 404 no_service") as caught:
        notifier.deliver(message())
    assert not caught.value.retryable and notifier.attempts == 1 and len(receiver.requests) == 1


def test_it_retries_a_rate_limit(receiver: HTTPReceiver):
    receiver.fail_next(1, status=429)
    assert webhook(receiver.url()).deliver(message()) == 2


def test_it_times_out_a_hung_receiver_and_the_retry_gets_through(receiver: HTTPReceiver):
    receiver.hang_next(1, seconds=5)
    notifier = webhook(receiver.url(), timeout=0.3)
    started = time.monotonic()
    assert notifier.deliver(message()) == 2
    assert time.monotonic() - started < 2
    assert len(receiver.requests) == 2


def test_it_fails_with_the_timeout_when_a_receiver_never_answers(receiver: HTTPReceiver):
    receiver.hang_next(3, seconds=5)
    with pytest.raises(NotifierError, match=r"no answer within 0.3s \(after 3 attempts\)"):
        webhook(receiver.url(), timeout=0.3).deliver(message())


def test_it_refuses_redirects_instead_of_following_them(receiver: HTTPReceiver):
    receiver.answer(302, headers={"Location": receiver.url("/elsewhere")})
    with pytest.raises(NotifierError, match="redirect"):
        webhook(receiver.url()).deliver(message())
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_it_never_shows_the_url_in_errors():
    token = "T0KEN-abc123-secret"
    url = f"http://user:pa55word@127.0.0.1:{free_port()}/services/{token}?sig={token}"
    with pytest.raises(NotifierError) as caught:
        webhook(url, retry_delays=[]).deliver(message())
    text = str(caught.value)
    assert "127.0.0.1" in text and "Connection refused" in text
    assert token not in text and "pa55word" not in text and "/services" not in text
    with pytest.raises(NotifierError) as caught:
        webhook(f"http://127.0.0.1:{free_port()}/bad path/{token}", retry_delays=[]).deliver(message())
    assert token not in str(caught.value)
    assert scrub(f"failed for {url}: /services/{token}", url) == "failed for ********: ********"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "url: required"),
        ({"url": "ftp://example.net/x"}, "url: must be an http:// or https:// URL"),
        ({"url": "http://x", "timeout": 0}, "timeout: must be more than 0"),
        ({"url": "http://x", "timeout": "5"}, "timeout: must be a number"),
        ({"url": "http://x", "retry_delays": [1, -1]}, "retry_delays: must be at most 10 numbers"),
        ({"url": "http://x", "colour": "red"}, "colour: unknown option for the webhook notifier kind"),
    ],
)
def test_it_rejects_bad_options_naming_them(options, expected):
    with pytest.raises(NotifierError, match=expected):
        build_notifier("hook", "webhook", options)


def test_it_gives_slack_text_and_blocks(receiver: HTTPReceiver):
    fields = {f"field {i}": f"value {i}" for i in range(12)}
    build_notifier("chat", "slack", {"url": receiver.url("/services/T/B/x"), "retry_delays": []}).deliver(
        message(fields=fields)
    )
    body = receiver.requests[0].json()
    assert body["text"] == ":red_circle: Backup failed: app-db (nightly)"
    header, section, *field_sections, context = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Backup failed: app-db (nightly)"},
    }
    assert section["text"] == {"type": "mrkdwn", "text": "Backup 7 of app-db failed: disk full &lt;&amp;&gt;"}
    assert [len(s["fields"]) for s in field_sections] == [10, 2]  # Slack allows 10 per section
    assert field_sections[0]["fields"][0] == {"type": "mrkdwn", "text": "*field 0*\nvalue 0"}
    assert context["type"] == "context" and "backup_failed" in context["elements"][0]["text"]


def test_it_gives_teams_an_adaptive_card(receiver: HTTPReceiver):
    build_notifier("teams", "teams", {"url": receiver.url("/workflows/x"), "retry_delays": []}).deliver(
        message()
    )
    body = receiver.requests[0].json()
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    title, text, facts, footer = card["body"]
    assert title["text"] == "Backup failed: app-db (nightly)" and title["color"] == "Attention"
    assert title["weight"] == "Bolder" and text["text"].startswith("Backup 7 of app-db failed")
    assert facts["type"] == "FactSet"
    assert facts["facts"][0] == {"title": "target", "value": "app-db"}
    assert footer["isSubtle"] is True


def test_it_writes_one_json_line_per_message_to_a_private_audit_file(tmp_path: Path):
    path = tmp_path / "logs" / "audit.jsonl"
    notifier = build_notifier("audit", "audit", {"path": str(path)})
    notifier.check()
    first, second = message(), message(event="restore_finished", severity="info", subject="Restore done")
    notifier.deliver(first)
    notifier.deliver(second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["backup_failed", "restore_finished"]
    assert json.loads(lines[0]) == first.as_dict()


def test_it_fails_plainly_on_an_unwritable_audit_file(tmp_path: Path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("")
        path = blocker / "audit.jsonl"  # a file where a directory should be
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        path = locked / "audit.jsonl"
    notifier = build_notifier("audit", "audit", {"path": str(path)})
    with pytest.raises(NotifierError, match="audit notifier audit: cannot append to"):
        notifier.deliver(message())
    with pytest.raises(NotifierError, match="path: must be an absolute path"):
        build_notifier("audit", "audit", {"path": "relative.jsonl"})


def test_it_sends_email_through_a_real_smtp_server(smtp_server: SMTPServer):
    sent = message()
    notifier = build_notifier("ops", "email", {"to": ["ops@example.net", "dba@example.net"]})
    assert notifier.deliver(sent) == 1
    [received] = smtp_server.messages
    assert received.recipients == ["ops@example.net", "dba@example.net"]
    assert received.subject == "[Backupsite] [FAILED] Backup failed: app-db (nightly)"
    assert received.message["X-Backupsite-Event"] == "backup_failed"
    assert received.message["From"] == "backupsite@localhost"
    assert "Backup 7 of app-db failed: disk full <&>" in received.body
    assert "target: app-db" in received.body and "error: disk full" in received.body


def test_it_retries_email_after_a_temporary_refusal_and_reports_a_permanent_one(smtp_server: SMTPServer):
    smtp_server.reject_next(1, "451 4.3.0 try again later")
    notifier = build_notifier("ops", "email", {"to": ["ops@example.net"], "retry_delays": FAST})
    assert notifier.deliver(message()) == 2 and len(smtp_server.messages) == 1

    smtp_server.reject_next(1, "554 5.7.1 message refused")
    with pytest.raises(NotifierError, match=r"the mail server said 554 5\.7\.1 message refused") as caught:
        notifier.deliver(message())
    assert not caught.value.retryable and notifier.attempts == 1


def test_it_fails_email_to_an_unreachable_server_naming_it(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    notifier = build_notifier("ops", "email", {"to": ["ops@example.net"]})
    with pytest.raises(
        NotifierError, match=rf"cannot send through 127.0.0.1:{settings.EMAIL_PORT}: Connection refused"
    ):
        notifier.deliver(message())


def test_it_checks_email_addresses():
    with pytest.raises(NotifierError, match="to: not an email address: nobody"):
        build_notifier("ops", "email", {"to": ["ops@example.net", "nobody"]})


def test_it_turns_credentials_in_the_url_into_basic_auth(receiver: HTTPReceiver):
    webhook(f"http://hook%40user:p%3Ass@127.0.0.1:{receiver.port}/hook").deliver(message())
    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"hook@user:p:ss").decode()
