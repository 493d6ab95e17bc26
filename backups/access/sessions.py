"""The admin's idle timeout: a logged-in session ends ``BACKUPSITE_SESSION_MINUTES`` after its
last activity (``SESSION_COOKIE_AGE``), not two weeks after the login.

Django moves a session's expiry (the database row's and the cookie's) only when it saves the
session; saving at every request (``SESSION_SAVE_EVERY_REQUEST``) would write the catalog for
each page and each poll. :class:`IdleTimeoutMiddleware` saves it at most once a minute instead,
by stamping the time of the activity in the session, so the timeout is exact to a minute.

Background requests are not activity: the dashboard's progress poll (``backups:progress``, every
second or two) and any request a page makes by script (the browser says so in
``Sec-Fetch-Mode``), so a page left open does not keep its session alive; its next poll after
the timeout is refused like any anonymous request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import SESSION_KEY
from django.contrib.auth.signals import user_logged_in
from django.http import HttpRequest, HttpResponse

#: How often, at most, activity is written to the session (seconds).
TOUCH_SECONDS = 60
#: The session key holding the time (epoch seconds) of the last activity written.
SEEN_KEY = "backupsite_seen"
#: Views polled in the background by the admin's pages.
BACKGROUND_VIEWS = frozenset({"backups:progress"})


def is_activity(request: HttpRequest) -> bool:
    """Whether ``request`` was made by a person (a page opened, a form sent), not by a page's
    script in the background."""
    match = request.resolver_match
    if match is not None and match.view_name in BACKGROUND_VIEWS:
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    return mode is None or mode == "navigate"


def connect() -> None:
    """Stamp each login (from BackupsConfig.ready), so the first page after it writes nothing."""
    user_logged_in.connect(stamp_login, dispatch_uid="backups.access.sessions.stamp_login")


def stamp_login(sender: Any, request: HttpRequest | None, **_: Any) -> None:
    session = getattr(request, "session", None)
    if session is not None:
        session[SEEN_KEY] = int(time.time())  # saved with the login's own session save


class IdleTimeoutMiddleware:
    """After ``SessionMiddleware`` (which saves what this marks): slides a logged-in session's
    expiry on activity, writing it at most every :data:`TOUCH_SECONDS`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        session = request.session
        # Only a logged-in session slides: a visitor's empty session is never created by this.
        if session.is_empty() or SESSION_KEY not in session or not is_activity(request):
            return response
        now = int(time.time())
        seen = session.get(SEEN_KEY)
        if session.modified or not isinstance(seen, int) or now - seen >= TOUCH_SECONDS:
            session[SEEN_KEY] = now  # modified: SessionMiddleware saves it, with a new expiry
        return response
