"""Notifications: which channels hear about an event, one delivery through each, and one
Notification row per delivery with its outcome.

A channel that fails (unreachable, refused, misconfigured, a secret not set on this host) is
recorded FAILED with a redacted message and logged without secrets; it never fails the caller,
and the other channels are still tried. Secrets are resolved right before each delivery.

The rows are an outbox: each is written PENDING with its whole (redacted) message and its
sender's ``host:pid`` before the send, so an alert whose sender died (SIGKILL, a lost host)
before the send is sent by the watch (:func:`send_unsent`); so is the ``backup_failed`` alert
of a run that died between recording FAILED and writing its rows (``Backup.alert_pending``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from . import secrets
from .cli import human_bytes
from .models import (
    Backup,
    BackupStatus,
    BackupStep,
    Event,
    Notification,
    NotificationStatus,
    Notifier,
    StepStatus,
    Target,
    default_notifier_events,
)
from .notifiers import Message, NotifierError, build_notifier
from .notifiers.email import parse_addresses
from .processes import process_gone, this_worker
from .requests import ScheduleInfo, schedule_info

logger = logging.getLogger(__name__)

BACKUP_FAILED = Event.BACKUP_FAILED.value
BACKUP_SUCCEEDED = Event.BACKUP_SUCCEEDED.value
MISSED = Event.MISSED.value
RECOVERED = Event.RECOVERED.value
ANOMALY = Event.ANOMALY.value
VERIFICATION_FAILED = Event.VERIFICATION_FAILED.value
RESTORE_FINISHED = Event.RESTORE_FINISHED.value
RESTORE_REQUESTED = Event.RESTORE_REQUESTED.value
EVENTS: tuple[str, ...] = tuple(Event.values)

SEVERITY = {
    BACKUP_FAILED: "error",
    BACKUP_SUCCEEDED: "info",
    MISSED: "error",
    RECOVERED: "info",
    ANOMALY: "warning",
    VERIFICATION_FAILED: "error",
    RESTORE_FINISHED: "info",  # "error" when its fields say status = failed
    RESTORE_REQUESTED: "warning",  # someone must approve or reject it
}
SCHEDULE_EMAIL_CHANNEL = "notification_email"  # the channel name of a schedule's notification_email


@dataclass(frozen=True)
class Channel:
    """One place to deliver to: a Notifier row, or a schedule's ``notification_email``."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    row: Notifier | None = None
    problem: str = ""  # why it cannot be used (a schedule names a notifier that does not exist)


def notify(
    event: str,
    *,
    subject: str,
    text: str,
    fields: dict[str, str] | None = None,
    backup: Backup | None = None,
    schedule: ScheduleInfo | None = None,
    target: Target | None = None,
    late: str = "",
) -> list[Notification]:
    """Deliver one event through every channel that wants it; return a Notification per delivery.
    ``late``: why the message comes late (the watch sending what a dead process left), added as
    its "sent late" field.

    Channels: the schedule's ``notify_channels`` when it names any, else every active default
    notifier; of those, only the ones whose ``events`` include ``event``. Besides, a schedule's
    ``notification_email`` addresses get the events in BACKUPSITE_NOTIFICATION_EMAIL_EVENTS.
    The schedule and target default to the backup's. When a backup is given and anything was
    delivered (or failed to be), a ``notify`` step records it on the backup's timeline.

    Raises ValueError for an unknown event (a programming error); never for a channel.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}; events are {', '.join(EVENTS)}")
    if backup is not None:
        if schedule is None:
            schedule = schedule_info(backup.schedule_id)
        if target is None:
            target = backup.target
    fields = {**(fields or {}), "sent late": late} if late else fields
    values = {str(name): secrets.redact(str(value)) for name, value in (fields or {}).items()}
    message = Message(
        event=event,
        subject=secrets.redact(subject),
        text=secrets.redact(text),
        fields=values,
        severity=severity_of(event, values),
    )
    started = timezone.now()
    deliveries = [
        _deliver(channel, message, backup=backup, schedule=schedule, target=target)
        for channel in channels_for(event, schedule)
    ]
    if backup is not None and deliveries:
        _record_step(backup, event, deliveries, started)
    return deliveries


def severity_of(event: str, fields: dict[str, str]) -> str:
    if event == RESTORE_FINISHED and fields.get("status", "").lower() == "failed":
        return "error"
    return SEVERITY.get(event, "info")


def channels_for(event: str, schedule: ScheduleInfo | None = None) -> list[Channel]:
    """The channels that get ``event`` for ``schedule`` (None: a run without a schedule)."""
    channels: list[Channel] = []
    names = list(schedule.notify_channels) if schedule is not None else []
    if schedule is not None and names:
        rows = {row.name: row for row in Notifier.objects.filter(name__in=names)}
        for name in names:
            row = rows.get(name)
            if row is None:
                if event in default_notifier_events():  # a broken alert path is itself an alert
                    problem = f"no notifier named {name!r}; schedule {schedule.name} names it in notify"
                    channels.append(Channel(name=str(name)[:100], kind="", problem=problem))
            elif row.is_active and event in row.events:
                channels.append(Channel(name=row.name, kind=row.kind, options=row.options, row=row))
    else:
        for row in Notifier.objects.filter(is_default=True, is_active=True):
            if event in row.events:
                channels.append(Channel(name=row.name, kind=row.kind, options=row.options, row=row))
    addresses = parse_addresses(schedule.notification_email) if schedule is not None else []
    if addresses and event in settings.BACKUPSITE_NOTIFICATION_EMAIL_EVENTS:
        channels.append(Channel(name=SCHEDULE_EMAIL_CHANNEL, kind="email", options={"to": addresses}))
    return channels


def _deliver(
    channel: Channel,
    message: Message,
    *,
    backup: Backup | None,
    schedule: ScheduleInfo | None,
    target: Target | None,
) -> Notification:
    delivery = Notification.objects.create(
        notifier=channel.row,
        channel=channel.name,
        kind=channel.kind,
        event=message.event,
        subject=message.subject[:255],
        text=message.text,
        fields=message.fields,
        sender=this_worker(),
        backup=backup,
        schedule_id=schedule.pk if schedule is not None else None,
        target=target,
    )
    return _send(delivery, channel, message)


def _send(delivery: Notification, channel: Channel, message: Message) -> Notification:
    """Send ``message`` through ``channel`` and record the outcome on ``delivery``."""
    notifier = None
    try:
        if channel.problem:
            raise NotifierError(channel.problem, retryable=False)
        notifier = build_notifier(channel.name, channel.kind, secrets.resolve_values(channel.options))
        notifier.deliver(message)
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)  # Ctrl-C or SIGTERM: the process stops
        # An interrupted send stays PENDING under this (ending) process: the watch sends it.
        delivery.status = NotificationStatus.PENDING if interrupted else NotificationStatus.FAILED
        delivery.error_message = secrets.redact(_describe(channel, exc))
        logger.warning(
            "notification %s (%s) via %s failed: %s",
            delivery.pk, message.event, channel.name, delivery.error_message,
        )  # fmt: skip
        if interrupted:
            _save(delivery, notifier, sender=delivery.sender)
            raise
    else:
        delivery.status = NotificationStatus.SENT
        delivery.sent_at = timezone.now()
    _save(delivery, notifier)
    return delivery


def _save(delivery: Notification, notifier: Any, sender: str = "") -> None:
    delivery.attempts += notifier.attempts if notifier is not None else 0
    delivery.sender = sender
    delivery.save(update_fields=["status", "error_message", "sent_at", "attempts", "sender"])


def _describe(channel: Channel, exc: BaseException) -> str:
    if isinstance(exc, NotifierError):
        return str(exc)
    if isinstance(exc, secrets.SecretError):
        return f"{channel.kind} notifier {channel.name}: {exc}"
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "interrupted before it was sent; the watch sends it"
    return f"{channel.kind} notifier {channel.name}: unexpected error: {type(exc).__name__}: {exc}"


def _record_step(backup: Backup, event: str, deliveries: list[Notification], started: Any) -> None:
    sent = [d.channel for d in deliveries if d.status == NotificationStatus.SENT]
    failed = [f"{d.channel} ({d.error_message})" for d in deliveries if d.status != NotificationStatus.SENT]
    parts = ([f"sent via {', '.join(sent)}"] if sent else []) + (
        [f"failed: {'; '.join(failed)}"] if failed else []
    )
    BackupStep.objects.create(
        backup=backup,
        name="notify",
        status=StepStatus.FAILED if failed else StepStatus.SUCCESS,
        started_at=started,
        completed_at=timezone.now(),
        message=f"{event}: " + "; ".join(parts),
    )


# -- backups -------------------------------------------------------------------------------------


class Summary(NamedTuple):
    subject: str
    text: str
    fields: dict[str, str]


def describe_backup(
    backup: Backup, event: str | None = None, schedule: ScheduleInfo | None = None
) -> Summary:
    """The standard subject, text and fields for a message about ``backup``; ``schedule``: its
    schedule's facts when the caller has them (else looked up)."""
    target = backup.target.name
    info = schedule if schedule is not None else schedule_info(backup.schedule_id)
    schedule_name = info.name if info is not None else ""
    via = f" ({schedule_name})" if schedule_name else ""
    run = f"Backup {backup.pk} ({backup.backup_name}) of {target}"
    if event == VERIFICATION_FAILED:
        subject = f"Verification failed: backup {backup.pk} of {target}"
        text = f"{run} did not pass verification: {backup.error_message or 'see its verify step'}"
    elif backup.status == BackupStatus.FAILED:
        subject = f"Backup failed: {target}{via}"
        text = f"{run} failed: {backup.error_message or 'no error recorded'}"
    elif backup.status == BackupStatus.SUCCESS:
        subject = f"Backup succeeded: {target}{via}, {human_bytes(backup.file_size)}"
        stored = backup.copies.filter(status="stored").count()
        text = (
            f"{run} stored {human_bytes(backup.file_size)} ({human_bytes(backup.raw_size)} before "
            f"compression) in {stored} cop{'y' if stored == 1 else 'ies'}"
            + (f" in {backup.duration_seconds:.1f}s." if backup.duration_seconds is not None else ".")
        )
    else:
        subject = f"Backup {backup.pk} of {target}: {backup.get_status_display()}"
        text = f"{run} is {backup.get_status_display().lower()}."
    if backup.notes:
        text += f"\nNotes: {backup.notes}"
    fields = {
        "target": target,
        "backup": f"{backup.pk} ({backup.backup_name})",
        "status": backup.status,
        "schedule": schedule_name,
        "type": backup.backup_type,
        "started": f"{backup.started_at:%Y-%m-%d %H:%M:%S %Z}" if backup.started_at else "",
        "duration": f"{backup.duration_seconds:.1f}s" if backup.duration_seconds is not None else "",
        "size": human_bytes(backup.file_size) if backup.file_size is not None else "",
        "raw size": human_bytes(backup.raw_size) if backup.raw_size is not None else "",
        "error": backup.error_message[:1000],
        "initiated by": backup.initiated_by,
        "link": backup_link(backup),
    }
    return Summary(subject, text, {name: value for name, value in fields.items() if value})


def backup_link(backup: Backup) -> str:
    """The backup's admin page under BACKUPSITE_BASE_URL, or "" when that is not set."""
    base = settings.BACKUPSITE_BASE_URL.rstrip("/")
    if not base:
        return ""
    try:
        return base + reverse("admin:backups_backup_change", args=[backup.pk])
    except NoReverseMatch:
        return ""


def notify_backup(
    backup: Backup, event: str | None = None, late: str = "", schedule: ScheduleInfo | None = None
) -> list[Notification]:
    """Tell the channels about ``backup``: ``event``, or by its status FAILED -> backup_failed,
    SUCCESS -> backup_succeeded (only channels that list it); any other status says nothing.
    ``late``: why the message comes late (a "sent late" field), when the watch sends it.
    ``schedule``: the facts of the backup's schedule when the caller has them (a run does), so
    they are not looked up twice more; None: looked up from ``backup.schedule_id``.

    Never raises: whatever goes wrong is logged and the backup's outcome stands as recorded.
    """
    if event is None:
        event = {BackupStatus.FAILED: BACKUP_FAILED, BackupStatus.SUCCESS: BACKUP_SUCCEEDED}.get(
            BackupStatus(backup.status)
        )
        if event is None:
            return []
    try:
        if schedule is None:
            schedule = schedule_info(backup.schedule_id)
        summary = describe_backup(backup, event, schedule)
        deliveries = notify(
            event,
            subject=summary.subject,
            text=summary.text,
            fields=summary.fields,
            backup=backup,
            schedule=schedule,
            late=late,
        )
    except Exception:
        logger.exception("backup %s of target %s: notifications failed", backup.pk, backup.target.name)
        return []  # alert_pending stays set: the watch tries again
    if event == BACKUP_FAILED:  # handed to its channels (rows written): the watch's job is done
        Backup.objects.filter(pk=backup.pk, alert_pending=True).update(alert_pending=False)
        backup.alert_pending = False
    return deliveries


# -- the outbox: what a sender that stopped left unsent ------------------------------------------

# A sender on this host is known gone at once; one on another host is presumed gone after
# BACKUPSITE_NOTIFICATION_RESEND_SECONDS (longer than any channel's retries); an unknown one
# after SETTLE.
SETTLE = timedelta(seconds=30)
GIVE_UP = timedelta(days=1)  # an alert not out within a day is recorded FAILED, not sent


class Outbox(NamedTuple):
    resent: int
    alerted: int
    abandoned: int


def send_unsent(now: datetime | None = None) -> Outbox:
    """The watch's outbox pass. PENDING deliveries whose sender stopped (a process of this host
    that is gone, or any sender silent for BACKUPSITE_NOTIFICATION_RESEND_SECONDS) are sent
    through their own channel, taken over with a conditional update so two watches never both
    send one; FAILED backups whose ``backup_failed`` alert has no delivery row yet (the run died
    after recording FAILED, before its rows) are alerted. Either, a day late, is given up and
    logged. Never raises for a channel."""
    now = now or timezone.now()
    resent = abandoned = alerted = 0
    pending = Notification.objects.filter(status=NotificationStatus.PENDING).select_related(
        "notifier", "backup"
    )
    for row in pending.order_by("created_at", "id"):
        if not sender_stopped(row.sender, row.resent_at or row.created_at, now):
            continue  # its sender may still be sending it
        if not Notification.objects.filter(
            pk=row.pk, status=NotificationStatus.PENDING, sender=row.sender, resent_at=row.resent_at
        ).update(sender=this_worker(), resent_at=now):
            continue  # another watch took it over
        row.sender, row.resent_at = this_worker(), now
        if row.created_at < now - GIVE_UP:
            _abandon(row, "not sent: the process sending it stopped, and it could not be sent within a day")
            abandoned += 1
        else:
            _resend(row)
            resent += 1
    failures = Backup.objects.filter(alert_pending=True).select_related("target")
    for backup in failures.order_by("completed_at", "id"):
        ended = backup.completed_at or now
        if sender_stopped(backup.worker, ended, now):  # else its process may be sending it now
            alerted += _alert_unsent_failure(backup, ended, now)
    return Outbox(resent, alerted, abandoned)


def _alert_unsent_failure(backup: Backup, ended: datetime, now: datetime) -> bool:
    """Send the ``backup_failed`` alert of ``backup`` unless its delivery rows exist (the pending
    pass owns them) or it failed over a day ago; True when sent. Its flag is cleared either way."""
    if ended < now - GIVE_UP:
        logger.warning("backup %s failed over a day ago and its alert never went out; given up", backup.pk)
    elif not Notification.objects.filter(backup=backup, event=BACKUP_FAILED).exists():
        logger.warning(
            "backup %s of target %s failed and its alert was never sent (the process stopped): sending it now",
            backup.pk, backup.target.name,
        )  # fmt: skip
        late = f"failed {ended:%Y-%m-%d %H:%M:%S %Z}; the process that ran it stopped before saying so"
        notify_backup(backup, BACKUP_FAILED, late=late)  # clears the flag once its rows exist
        return True
    Backup.objects.filter(pk=backup.pk).update(alert_pending=False)
    return False


def sender_stopped(sender: str, since: datetime, now: datetime) -> bool:
    """Whether what ``sender`` (host:pid) had to send by ``since`` is no longer its to send: it
    is a process of this host that is gone, or it is unknown and ``since`` is SETTLE old, or
    (another host's) ``since`` is BACKUPSITE_NOTIFICATION_RESEND_SECONDS old."""
    if sender and process_gone(sender):
        return True
    if not sender:
        return since < now - SETTLE
    return since < now - timedelta(seconds=settings.BACKUPSITE_NOTIFICATION_RESEND_SECONDS)


def _resend(row: Notification) -> None:
    """Send ``row``'s stored message through its channel as it is configured now."""
    channel = _channel_of(row)
    if isinstance(channel, str):
        _abandon(row, channel)
        return
    fields = dict(row.fields or {})
    fields["sent late"] = f"raised {row.created_at:%Y-%m-%d %H:%M:%S %Z}; the process sending it stopped"
    message = Message(
        event=row.event,
        subject=row.subject,
        text=row.text or row.subject,
        fields=fields,
        severity=severity_of(row.event, fields),
    )
    started = timezone.now()
    logger.warning(
        "notification %s (%s) via %s: its sender stopped; sending it now", row.pk, row.event, row.channel
    )
    _send(row, channel, message)
    if row.backup is not None:
        _record_step(row.backup, row.event, [row], started)


def _channel_of(row: Notification) -> Channel | str:
    """The channel ``row`` goes through, or why it cannot go anywhere now."""
    if row.notifier is not None:
        if not row.notifier.is_active:
            return f"not sent: notifier {row.channel} was disabled before it could be sent again"
        return Channel(
            name=row.notifier.name, kind=row.notifier.kind, options=row.notifier.options, row=row.notifier
        )
    if row.channel == SCHEDULE_EMAIL_CHANNEL and row.schedule_id is not None:
        info = schedule_info(row.schedule_id)
        addresses = parse_addresses(info.notification_email) if info is not None else []
        if addresses:
            return Channel(name=SCHEDULE_EMAIL_CHANNEL, kind="email", options={"to": addresses})
    return f"not sent: channel {row.channel} no longer exists"


def _abandon(row: Notification, reason: str) -> None:
    logger.warning("notification %s (%s) via %s: %s", row.pk, row.event, row.channel, reason)
    row.status, row.error_message, row.sender = NotificationStatus.FAILED, reason, ""
    row.save(update_fields=["status", "error_message", "sender"])
