"""``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics`` (Prometheus), answered by
:class:`ProbesMiddleware`, the first middleware: Kubernetes probes send ``Host: <pod IP>`` over
plain HTTP, so these paths are answered before anything reads the host (ALLOWED_HOSTS) or
redirects to HTTPS. Thin: the facts and the access rules come from services.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from django.conf import settings
from django.contrib import auth
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers

from backups import services


def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers; nothing else is asked (no database: a catalog outage must not get
    every web process restarted)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    """200 when every check passes, else 503; details (hosts, errors) only for staff and
    metrics readers."""
    report = services.readiness()
    body = report.as_dict(details=_may_see_details(request))
    return JsonResponse(body, status=200 if report.ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    refusal = _metrics_refusal(request)
    if refusal:
        return HttpResponse(f"{refusal}\n", status=403, content_type="text/plain; charset=utf-8")
    body, content_type = services.metrics_exposition()
    return HttpResponse(body, content_type=content_type)


def _metrics_refusal(request: HttpRequest) -> str:
    return services.metrics_refusal(
        request.headers.get("Authorization"),
        request.META.get("REMOTE_ADDR"),
        request.META.get("HTTP_X_FORWARDED_FOR"),
    )


def _may_see_details(request: HttpRequest) -> bool:
    return not _metrics_refusal(request) or _is_staff(request)


def _is_staff(request: HttpRequest) -> bool:
    """Whether the session cookie belongs to an active staff user. The session and auth
    middlewares have not run yet (this middleware is first), so the session is read here; a
    request without the cookie (a probe) costs no query."""
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(session_key)
    try:
        user = auth.get_user(request)
    except DatabaseError:  # the catalog is down: readiness says so, without details
        return False
    return bool(user.is_active and user.is_staff)


PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics,
}


class ProbesMiddleware:
    """Answers GET and HEAD of the probe paths itself; passes every other request on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PROBES.get(request.path_info)
        if view is None or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        response = view(request)
        add_never_cache_headers(response)
        if request.method == "HEAD":
            response.content = b""
        return response
