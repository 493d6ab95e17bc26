"""The ``oidc`` mode's pages: the start of a login (off to the provider), the callback (back from
it) and the admin login page's "Log in with <provider>" button.

mozilla-django-oidc's views, told apart by ``OIDC_AUTHENTICATE_CLASS`` and ``OIDC_CALLBACK_CLASS``
and served by ``mozilla_django_oidc.urls`` under ``/oidc/``. Every way a login can fail ends on
the admin login page with a message saying why: the provider unreachable, the login refused, or
a user whose claim gives no role (refused, and audited as a failed login).
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.text import capfirst
from django.views.generic import View
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from . import provider, setting

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("django.security.SuspiciousOperation")

PASSWORD_MODES = ("local", "ldap")  # the login modes the admin's username/password form serves


class LoginStartView(OIDCAuthenticationRequestView):
    """Redirects to the provider's authorization endpoint (state, nonce, PKCE challenge kept in
    the session), or back to the login page when the provider cannot be reached."""

    def __init__(self, **kwargs: Any) -> None:
        # Not the library's __init__: it wants the authorization endpoint among the settings;
        # here it is discovered at request time (below).
        View.__init__(self, **kwargs)
        self.OIDC_RP_CLIENT_ID = setting("OIDC_RP_CLIENT_ID")

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider.endpoints().authorization_endpoint
        except provider.ProviderUnavailable as exc:
            return unavailable(request, exc)
        response: HttpResponse = super().get(request)
        return response

    def get_extra_params(self, request: HttpRequest) -> dict[str, str]:
        return {"redirect_uri": redirect_uri(request)}  # replaces the library's (see redirect_uri)


class CallbackView(OIDCAuthenticationCallbackView):
    """Back from the provider: logs in the user the backend returns, if some role lets them in."""

    @property
    def success_url(self) -> str:
        # Where the login started (checked by LoginStartView), else the dashboard.
        return str(self.request.session.get("oidc_login_next") or reverse("admin:index"))

    @property
    def failure_url(self) -> str:
        return reverse("admin:login")

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            response: HttpResponse = super().get(request)
        except (provider.ProviderUnavailable, requests.RequestException) as exc:
            # The token, keys or userinfo request failed: the message names the URL, never a secret.
            return unavailable(request, exc)
        except SuspiciousOperation as exc:
            # An unknown state, a bad signature, nonce, issuer or audience: refused, and logged
            # where Django logs every SuspiciousOperation.
            security_logger.warning("OpenID Connect login refused: %s", exc)
            return self.login_failure()
        return response

    def login_failure(self) -> HttpResponse:
        name = capfirst(setting("OIDC_PROVIDER_NAME"))
        messages.error(self.request, f"{name} did not log you in. Please try again.")
        return HttpResponseRedirect(self.failure_url)

    def login_success(self) -> HttpResponse:
        if not self.user.is_staff:
            # The provider knows the user, but no group of theirs gives a role here.
            username = self.user.get_username()
            name = setting("OIDC_PROVIDER_NAME")
            user_login_failed.send(__name__, credentials={"username": username}, request=self.request)
            messages.error(
                self.request,
                f"You are signed in at {name} as {username}, but none of your "
                "groups gives a role in Backupsite. Ask an administrator for access.",
            )
            return HttpResponseRedirect(self.failure_url)
        response: HttpResponse = super().login_success()
        return response


def redirect_uri(request: HttpRequest) -> str:
    """Where the provider sends the browser back: under ``BACKUPSITE_BASE_URL`` when it is set
    (behind a proxy that ends TLS the request itself looks like plain HTTP, and the provider
    accepts only the https:// address registered with it), else the request's own address."""
    path = reverse("oidc_authentication_callback")
    base = settings.BACKUPSITE_BASE_URL.rstrip("/")
    return f"{base}{path}" if base else request.build_absolute_uri(path)


def unavailable(request: HttpRequest, error: Exception) -> HttpResponse:
    logger.warning("OpenID Connect login failed: the provider is unavailable: %s", error)
    if isinstance(error, provider.ProviderUnavailable):
        reason = str(error)
    elif isinstance(error, requests.HTTPError) and error.response is not None:
        reason = f"it answered HTTP {error.response.status_code}"
    else:
        reason = "it did not answer"
    others = " or log in with your username and password" if password_login() else ""
    name = capfirst(setting("OIDC_PROVIDER_NAME"))
    messages.error(request, f"{name} is unavailable ({reason}). Try again later{others}.")
    return HttpResponseRedirect(reverse("admin:login"))


def password_login() -> bool:
    """Whether the admin's username/password form signs anyone in."""
    return any(mode in settings.BACKUPSITE_AUTH for mode in PASSWORD_MODES)


def login_context(request: HttpRequest) -> dict[str, Any]:
    """Context processor (added by the settings with the oidc mode) for
    ``templates/admin/login.html``: the provider's name and whether the password form shows."""
    if "oidc" not in settings.BACKUPSITE_AUTH:
        return {}
    return {
        "oidc_login": {"provider_name": setting("OIDC_PROVIDER_NAME"), "password_login": password_login()}
    }
