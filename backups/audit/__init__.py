"""The audit log: :func:`record` appends one :class:`~backups.models.AuditEvent` (who, how they
had logged in, from where, what, to which object, with what outcome) and the same event, as one
JSON line, to every active notifier of kind ``audit``.

The web entry points call :func:`record` with their request. Signal receivers record the rest:
logins, failed logins (the username tried, never the password) and logouts; every change saved
through the admin, from its LogEntry (field names, never values); user, group and permission
changes from anywhere. :class:`RequestMiddleware` makes the request being served known to the
receivers, for the user, the login method and the address.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache, partial
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.module_loading import import_string

from backups import secrets
from backups.access.proxies import client_address
from backups.models import ACTIONS, AuditEvent, AuthMethod, Notifier, Outcome
from backups.notifiers import Message, NotifierError, build_notifier
from backups.retention.durations import DurationError, parse_duration

logger = logging.getLogger(__name__)

SESSION_KEY = "backupsite_auth_method"  # set by a login mode that Django's backend does not name
MASK = "********"
# A details key that names a secret gets its value masked, whatever the caller passed.
SECRET_KEY = re.compile(r"pass|secret|token|credential|api_?key|private", re.IGNORECASE)

_current_request: ContextVar[HttpRequest | None] = ContextVar("backupsite_audit_request", default=None)


class AuditObject(NamedTuple):
    """What an event is about, when there is no model instance to hand (an admin LogEntry)."""

    type: str
    id: str
    repr: str = ""


def record(
    action: str,
    *,
    request: HttpRequest | None = None,
    user: Any = None,
    obj: models.Model | AuditObject | None = None,
    outcome: str = Outcome.SUCCESS,
    details: dict[str, Any] | None = None,
    auth_method: str | None = None,
    username: str | None = None,
    address: str | None = None,
) -> AuditEvent:
    """Append one event and return it.

    ``request`` (else the one being served, see :class:`RequestMiddleware`) gives the user,
    the login method (the session's ``backupsite_auth_method``, else the backend that logged the
    user in) and the client's address (``X-Forwarded-For`` only from a trusted proxy); explicit
    arguments win. ``details`` is stored with resolved secrets redacted and the values of keys
    that name a secret masked. When the transaction commits, the event is appended to every
    active ``audit`` notifier's file; a file that cannot be written is logged, and the row stays.

    Raises ValueError for an unknown action or outcome (a programming error).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; actions are {', '.join(ACTIONS)}")
    if outcome not in Outcome.values:
        raise ValueError(f"unknown audit outcome {outcome!r}; outcomes are {', '.join(Outcome.values)}")
    if request is None:
        request = _current_request.get()
    if user is None and request is not None:
        user = getattr(request, "user", None)
    actor = user if user is not None and user.is_authenticated else None
    if username is None:
        username = actor.get_username() if actor is not None else ""
    event = AuditEvent.objects.create(
        user=actor,
        username=username[:150],
        auth_method=auth_method or auth_method_of(request, actor),
        address=address or (request_address(request) if request is not None else None),
        action=action,
        **_object_fields(obj),
        outcome=outcome,
        details=_clean(details or {}),
    )
    files = list(Notifier.objects.filter(kind="audit", is_active=True))
    if files:
        transaction.on_commit(partial(append_to_audit_files, event, files))
    return event


def auth_method_of(request: HttpRequest | None, actor: Any) -> str:
    """How ``actor`` logged in for ``request``: "system" without a request, "none" without a
    user, else the login mode's session mark or the backend's kind ("" when unknown)."""
    if request is None:
        return AuthMethod.SYSTEM if actor is None else ""
    if actor is None:
        return AuthMethod.NONE
    if getattr(request, "backupsite_auth_method", None) == AuthMethod.TOKEN:
        return AuthMethod.TOKEN  # an API call: the token authenticated it, whatever the session says
    session = getattr(request, "session", None)
    if session is None:
        return ""
    marked = session.get(SESSION_KEY)
    if marked in AuthMethod.values:
        return str(marked)
    return backend_method(session.get(BACKEND_SESSION_KEY, ""))


@lru_cache(maxsize=16)
def backend_method(path: str) -> str:
    """The login method of an authentication backend (its dotted path): LDAP, OpenID Connect,
    a proxy's remote user, or a local account; "" for one this does not know."""
    try:
        backend = import_string(path)
    except ImportError:
        return ""
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in backend.__mro__}
    modules = {cls.__module__.partition(".")[0] for cls in backend.__mro__}
    if "django_auth_ldap" in modules:
        return AuthMethod.LDAP
    if "mozilla_django_oidc" in modules:
        return AuthMethod.OIDC
    if "django.contrib.auth.backends.RemoteUserBackend" in names:
        return AuthMethod.PROXY
    if "django.contrib.auth.backends.ModelBackend" in names:
        return AuthMethod.LOCAL
    return ""


def request_address(request: HttpRequest) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or behind a trusted proxy its X-Forwarded-For."""
    return client_address(
        request.META.get("REMOTE_ADDR"),
        request.META.get("HTTP_X_FORWARDED_FOR"),
        settings.BACKUPSITE_TRUSTED_PROXIES,
    )


def current_request() -> HttpRequest | None:
    return _current_request.get()


class RequestMiddleware:
    """Makes the request being served known to :func:`record` calls not handed it (the signal
    receivers), so that an admin change or a role change names who made it and from where."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


def _object_fields(obj: models.Model | AuditObject | None) -> dict[str, str]:
    if obj is None:
        return {"object_type": "", "object_id": "", "object_repr": ""}
    if isinstance(obj, AuditObject):
        kind, pk, text = obj.type, obj.id, obj.repr
    else:
        kind, pk = obj._meta.label_lower, "" if obj.pk is None else str(obj.pk)
        # Target(pk=3), a reference to a row not loaded (a refused request), has no name to show.
        text = str(obj) if obj._state.db is not None else ""
    return {"object_type": kind[:100], "object_id": pk[:64], "object_repr": secrets.redact(text)[:200]}


def _clean(value: Any, key: str = "") -> Any:
    """``value`` as JSON: secrets redacted, values of keys that name a secret masked."""
    if isinstance(value, dict):
        return {str(name): _clean(item, str(name)) for name, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item, key) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if key and SECRET_KEY.search(key):
        return MASK
    return secrets.redact(str(value))


# -- the audit files -------------------------------------------------------------------------------


def event_dict(event: AuditEvent) -> dict[str, Any]:
    """The event as one JSON object (what ``audit_export --json`` writes, one per line)."""
    return {
        "id": event.pk,
        "time": event.created_at.isoformat(),
        "user": event.username,
        "auth_method": event.auth_method,
        "address": event.address,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object": event.object_repr,
        "outcome": event.outcome,
        "details": event.details,
    }


def append_to_audit_files(event: AuditEvent, notifiers: list[Notifier]) -> None:
    """Append ``event`` to each of ``notifiers`` (of kind ``audit``); failures are logged, never
    raised."""
    message = Message(
        event=event.action,
        subject=f"{event.action} by {event.username or '-'}: {event.outcome}",
        text=event.object_label,
        fields={
            name: json.dumps(value, sort_keys=True) if name == "details" else str(value or "")
            for name, value in event_dict(event).items()
            if name != "time"
        },
        severity="info" if event.outcome == Outcome.SUCCESS else "warning",
        id=f"audit-{event.pk}",
        created_at=event.created_at.isoformat(timespec="seconds"),
    )
    for row in notifiers:
        try:
            build_notifier(row.name, row.kind, secrets.resolve_values(row.options)).deliver(message)
        except (NotifierError, secrets.SecretError) as exc:
            logger.error(
                "audit event %s (%s) not appended to notifier %s: %s", event.pk, event.action, row.name, exc
            )
        except Exception:
            logger.exception(
                "audit event %s (%s) not appended to notifier %s", event.pk, event.action, row.name
            )


# -- reading the log -------------------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The moment ``text`` names: a duration before ``now`` (``30d``, ``12h``, ``1y6mo``) or an
    ISO date or time (``2026-01-31``, ``2026-01-31T08:00``; the current time zone when naive).
    ValueError saying how to write it."""
    text = text.strip()
    try:
        return parse_duration(text).before(now or timezone.now(), timezone.get_current_timezone())
    except DurationError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (e.g. 30d, 12h, 1y6mo; units min, h, d, w, mo, y) "
            "nor an ISO date (e.g. 2026-01-31 or 2026-01-31T08:00)"
        ) from None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


def events_since(moment: datetime) -> models.QuerySet[AuditEvent]:
    """The events from ``moment`` on, oldest first."""
    return AuditEvent.objects.filter(created_at__gte=moment).order_by("created_at", "id")


# Admin changes of these are recorded by the user and group receivers, wherever they are made.
ACCOUNT_MODELS = ("auth.user", "auth.group")


def record_deletions(request: HttpRequest, model: type[models.Model], objects: list[tuple[Any, str]]) -> None:
    """object.delete for each of ``objects`` (pk, text) of ``model`` deleted together through the
    admin, whose LogEntry rows are then bulk-created and send no signal. Users and groups are
    left to their own receivers."""
    label = model._meta.label_lower
    if label in ACCOUNT_MODELS:
        return
    for pk, text in objects:
        record(
            "object.delete",
            request=request,
            obj=AuditObject(label, str(pk), text),
            details={"model": label, "change": "deleted"},
        )
