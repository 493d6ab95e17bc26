"""Login throttling with django-axes: repeated failed logins for one name from one client address
lock that name out from that address for a while.

``BACKUPSITE_LOGIN_FAILURE_LIMIT`` failures (default 5) within the cool-off lock the pair out for
``BACKUPSITE_LOGIN_COOLOFF_MINUTES`` (default 15, settings ``AXES_FAILURE_LIMIT`` and
``AXES_COOLOFF_TIME``); every attempt while locked, even with the right password, is refused and
starts the wait again. Another address, or another name from the same address, is not locked. A
successful login forgets that pair's failures.

The address is the client's behind ``BACKUPSITE_TRUSTED_PROXIES`` (:func:`client_ip`, the one
the audit log records): the proxy's own address must not lock out everyone behind it, and a
forged X-Forwarded-For from anyone else changes nothing. The refused login gets the admin's login
page back, its error saying how long to wait (:func:`lockout_response`); the lockout is audited
as ``login.lockout`` (:func:`record_lockout`), with the name tried, never the password.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from backups.access.proxies import client_address
from backups.humanize import human_duration
from backups.models import Outcome
from backups.services import record_audit

LOCKED_STATUS = 429  # Too Many Requests: the page says when to come back


class LoginThrottle(AxesStandaloneBackend):
    """First in ``AUTHENTICATION_BACKENDS``: refuses a locked-out name and address before any
    password is checked (the backends after it decide the rest). Only a login that names a user
    from an address is throttled: OpenID Connect's callback and the proxy name nobody (their
    provider throttles its own logins), and a call without a request (a command, the test
    client's ``login``) comes from no address."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is not None and username:
            super().authenticate(request, username, password, **kwargs)


class PasswordLoginHandler(AxesDatabaseHandler):
    """``AXES_HANDLER``: axes' database handler, counting only the failures of logins that name
    a user (as :class:`LoginThrottle` checks only those): failed OpenID Connect callbacks from
    one office's address must not lock its users out."""

    def user_login_failed(
        self, sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
    ) -> None:
        if request is not None and get_client_username(request, credentials):
            super().user_login_failed(sender, credentials, request, **kwargs)


def client_ip(request: HttpRequest) -> str | None:
    """``AXES_CLIENT_IP_CALLABLE``: the client's address, X-Forwarded-For believed only from a
    trusted proxy."""
    return client_address(
        request.META.get("REMOTE_ADDR"),
        request.META.get("HTTP_X_FORWARDED_FOR"),
        settings.BACKUPSITE_TRUSTED_PROXIES,
    )


def lockout_message(request: HttpRequest | None = None) -> str:
    """What a locked-out login is told: how long from now (each attempt starts the wait again)."""
    cool_off = get_cool_off(request)
    wait = human_duration(cool_off.total_seconds()) if cool_off is not None else "a while"
    return (
        f"Too many failed logins: this account is locked from your address for the next {wait}. "
        "Every attempt meanwhile, even with the right password, starts the wait again."
    )


def lockout_response(
    request: HttpRequest, response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: the login page the refused attempt was posted to, rendered
    again with the lockout as its error (the admin's form says "enter the correct username and
    password", which is not why); a plain text answer for a login without a form page."""
    message = lockout_message(request)
    context = getattr(response, "context_data", None)
    form = context.get("form") if isinstance(context, dict) else None
    if not isinstance(response, TemplateResponse) or form is None or not hasattr(form, "add_error"):
        return HttpResponse(message, status=LOCKED_STATUS, content_type="text/plain; charset=utf-8")
    form.errors.pop(NON_FIELD_ERRORS, None)
    form.add_error(None, ValidationError(message, code="locked_out"))
    page = TemplateResponse(request, response.template_name, context, status=LOCKED_STATUS)
    return page.render()  # returned by a middleware, after the handler renders responses


def record_lockout(
    sender: Any, request: HttpRequest, username: str | None, ip_address: str | None, **kwargs: Any
) -> None:
    """axes' ``user_locked_out``: audit the attempt that starts a lockout. Axes sends it again at
    every refused attempt while locked; those are recorded as ``login.failure`` already."""
    failures = getattr(request, "axes_failures_since_start", None)
    if isinstance(failures, int) and failures > settings.AXES_FAILURE_LIMIT:
        return
    cool_off = get_cool_off(request)
    record_audit(
        "login.lockout",
        request=request,
        user=AnonymousUser(),
        username=username or "",
        address=ip_address,
        outcome=Outcome.REFUSED,
        details={
            "failures": failures,
            "cooloff_seconds": int(cool_off.total_seconds()) if cool_off is not None else None,
        },
    )


def connect() -> None:
    """Audit lockouts (from ``BackupsConfig.ready``)."""
    user_locked_out.connect(record_lockout, dispatch_uid="backups.throttle.record_lockout")
