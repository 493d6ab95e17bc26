"""HTTP to /api/v1/ with urllib: a timeout on every request, the token as a Bearer header, JSON
in and out, and every failure turned into a CtlError (errors.py).

Retries only where repeating cannot do harm: a GET is tried again after a connection error
(refused, reset, timed out) and after a 429 (honouring Retry-After). A POST is sent once: a
"run now" repeated after a lost answer would start a second backup.

Redirects are not followed: urllib would resend the Authorization header to wherever the
Location points. The error names the address to use instead.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping
from email.message import Message
from typing import Any

from backups.remote.config import NO_TOKEN, Settings
from backups.remote.errors import EXIT_UNREACHABLE, EXIT_USAGE, ApiError, CtlError, Unreachable

DEFAULT_TIMEOUT = 30.0
GET_ATTEMPTS = 3
MAX_RETRY_AFTER = 60.0  # seconds; a longer Retry-After fails the GET rather than hang a script
USER_AGENT = "backupctl"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError, handled below


class Api:
    """One site's /api/v1/. ``sleep`` is injectable for the retry waits."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_NoRedirects())

    def url(self, path: str, query: Mapping[str, object] | None = None) -> str:
        url = self.settings.api_url + path.lstrip("/")
        if query:
            clean = {key: str(value) for key, value in query.items() if value is not None and value != ""}
            if clean:
                url += "?" + urllib.parse.urlencode(clean)
        return url

    def get(
        self,
        path: str,
        query: Mapping[str, object] | None = None,
        *,
        auth: bool = True,
        accept: Collection[int] = (),
    ) -> Any:
        """The JSON answer of a GET; statuses in ``accept`` are answers too, not errors."""
        return self._send("GET", self.url(path, query), None, auth=auth, accept=accept)

    def post(self, path: str, body: Mapping[str, object] | None = None) -> Any:
        return self._send("POST", self.url(path), body if body is not None else {}, auth=True, accept=())

    def _send(
        self, method: str, url: str, body: Mapping[str, object] | None, *, auth: bool, accept: Collection[int]
    ) -> Any:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if auth:
            if self.settings.token is None:
                raise CtlError(NO_TOKEN)
            headers["Authorization"] = f"Bearer {self.settings.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        attempts = GET_ATTEMPTS if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310  (http(s) only: config.api_root)
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    return _json(response.status, response.headers, response.read(), url)
            except urllib.error.HTTPError as exc:
                status, answer = exc.code, exc.read()
                if status in accept:
                    return _json(status, exc.headers, answer, url)
                wait = _retry_after(exc.headers) if status == 429 else None
                if wait is not None and attempt < attempts:
                    self._sleep(wait)
                    continue
                raise _error(status, exc.headers, answer, url) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if attempt < attempts:
                    self._sleep(0.5 * 2 ** (attempt - 1))
                    continue
                reason = _reason(exc, self.timeout)
                if method != "GET" and not _never_connected(exc):
                    reason += "; the request may have been carried out: check before sending it again"
                raise Unreachable(url, reason) from None
        raise AssertionError("unreachable: the last attempt returns or raises")


def _json(status: int, headers: Message, raw: bytes, url: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        kind = headers.get_content_type() if headers is not None else "unknown type"
        code = EXIT_UNREACHABLE if status >= 500 else EXIT_USAGE
        raise CtlError(
            f"{url} answered HTTP {status} with {kind}, not JSON: is BACKUPCTL_URL the Backupsite's "
            "address, and is its version one with /api/v1/?",
            code,
        ) from None


def _error(status: int, headers: Message, raw: bytes, url: str) -> CtlError:
    if 300 <= status < 400:
        location = headers.get("Location", "?")
        return CtlError(
            f"{url} redirects to {location}; the token is not sent after a redirect: set BACKUPCTL_URL "
            "to the address the site answers on (often https://)"
        )
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        code = str(payload.get("code") or "error")
        field = payload.get("field")
        message = payload["message"]
        if status == 401:
            message += " (check the token in BACKUPCTL_TOKEN or the token file; tokens are made with `manage.py api_token create`)"
        if status == 429 and headers.get("Retry-After"):
            message += f" (retry after {headers['Retry-After']} s)"
        return ApiError(status, code, message, str(field) if field else None, url)
    if isinstance(payload, dict) and "detail" in payload:  # a framework's own error shape
        return ApiError(status, "error", _detail(payload["detail"]), None, url)
    if status >= 500:
        return CtlError(f"the server failed to answer {url}: HTTP {status}", EXIT_UNREACHABLE)
    kind = headers.get_content_type() if headers is not None else "unknown type"
    return CtlError(
        f"{url} answered HTTP {status} with {kind}, not a JSON error: is BACKUPCTL_URL the Backupsite's "
        "address, and is its version one with /api/v1/?"
    )


def _detail(detail: object) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(part) for part in item.get("loc", []))
                parts.append(f"{where}: {item.get('msg', item)}" if where else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _retry_after(headers: Message) -> float | None:
    try:
        seconds = float(headers.get("Retry-After", "1"))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER else None


def _reason(exc: BaseException, timeout: float) -> str:
    """Why there was no answer, in words: refused, unknown host, no answer within N s, TLS."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s (raise --timeout if the site is just slow)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the site running, and on that port?)"
    if isinstance(reason, socket.gaierror):
        return f"the host name does not resolve ({reason.strerror})"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({reason.verify_message}); set SSL_CERT_FILE to your CA bundle"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed ({reason.reason or reason}); is it an https:// site?"
    if isinstance(reason, http.client.RemoteDisconnected):  # before its base, ConnectionResetError
        return "the server closed the connection without answering"
    if isinstance(reason, ConnectionResetError):
        return "the connection was reset"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _never_connected(exc: BaseException) -> bool:
    """Whether the request surely never reached the server (refused, unknown host)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ConnectionRefusedError | socket.gaierror)
