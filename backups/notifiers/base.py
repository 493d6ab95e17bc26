"""The notifier contract: one channel (email, webhook, chat, file) per class, registered in
``backups.notifiers``.

A notifier gets plain values (its name and options with secrets already resolved) and a
:class:`Message`; :meth:`Notifier.send` makes one attempt and raises :class:`NotifierError`,
whose message never holds a secret: channels whose address is a secret (webhook URLs carry
their token) name only the host. :meth:`Notifier.deliver` adds the retries with backoff. A
kind imports :mod:`backups.plugins` (its ``Option`` spec), this module, the standard library
and its client library.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from backups.plugins import Option, matches, validate_options

logger = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "error")
USER_AGENT = "Backupsite-notifier/1"
RETRY_AFTER_CAP = 60.0  # seconds: a receiver's Retry-After never holds a worker longer


class NotifierError(Exception):
    """A delivery failed. The message names the channel, never a secret or a secret URL.

    ``retryable`` is False for failures another attempt cannot fix (bad options, a 4xx answer).
    """

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the receiver asked for (HTTP Retry-After)


@dataclass(frozen=True)
class Message:
    """What happened, in plain values every channel can render."""

    event: str
    subject: str
    text: str
    fields: dict[str, str] = field(default_factory=dict)
    severity: str = "info"  # info | warning | error
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the same for every channel and retry
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plain_text(self) -> str:
        """The text followed by one ``name: value`` line per field."""
        lines = [self.text] if self.text else []
        if self.fields:
            lines += ["", *(f"{name}: {value}" for name, value in self.fields.items())]
        return "\n".join(lines)


class Notifier(ABC):
    kind: ClassVar[str]
    label: ClassVar[str]
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        problems = self.validate_options(options)
        if problems:
            raise NotifierError(
                f"{name}: " + "; ".join(f"{key}: {message}" for key, message in problems), retryable=False
            )
        self.name = name
        self.options = options
        self.attempts = 0  # attempts made by the last deliver()

    # -- options -------------------------------------------------------------------------------

    @classmethod
    def validate_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        """(option, message) for every problem; empty when the options are usable."""
        problems = validate_options(options, cls.OPTIONS, family=f"{cls.kind} notifier")
        return problems or cls.check_options(options)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        """Kind-specific checks across options (their types are already right)."""
        return []

    def opt(self, key: str) -> Any:
        value = self.options.get(key)
        return self.OPTIONS[key].default if value in (None, "") else value

    # -- the contract ----------------------------------------------------------------------------

    @abstractmethod
    def send(self, message: Message) -> None:
        """One attempt to deliver ``message``; raise :class:`NotifierError` when it did not go out."""

    def check(self) -> None:  # noqa: B027  (most channels cannot be checked without sending)
        """Raise :class:`NotifierError` when the channel surely cannot deliver from this host."""

    def retry_delays(self) -> list[float]:
        """Seconds to wait before each retry (the ``retry_delays`` option, if the kind has one)."""
        if "retry_delays" not in self.OPTIONS:
            return []
        return [float(delay) for delay in self.opt("retry_delays") or []]

    def deliver(self, message: Message) -> int:
        """Send ``message``, retrying retryable failures after each of :meth:`retry_delays`.
        Returns the number of attempts; raises the last :class:`NotifierError`."""
        delays = self.retry_delays()
        self.attempts = 0
        while True:
            self.attempts += 1
            try:
                self.send(message)
                return self.attempts
            except NotifierError as exc:
                if not exc.retryable or self.attempts > len(delays):
                    if self.attempts > 1:
                        raise NotifierError(
                            f"{exc} (after {self.attempts} attempts)", retryable=exc.retryable
                        ) from None
                    raise
                delay = delays[self.attempts - 1]
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, RETRY_AFTER_CAP))
                logger.warning(
                    "notifier %s: attempt %s failed (%s); retrying in %gs",
                    self.name,
                    self.attempts,
                    exc,
                    delay,
                )
                time.sleep(delay)


# -- channels that POST JSON over HTTP(S) ------------------------------------------------------------

HTTP_OPTIONS = {
    "url": Option(
        str, "the receiver's URL, as a ${ENV_VAR} or ${file:} reference", required=True, secret=True
    ),
    "timeout": Option(float, "seconds to wait for the receiver (connect, each read)", default=10.0),
    "retry_delays": Option(
        list, "seconds to wait before each retry, e.g. [1, 5, 30]", default=[1.0, 5.0, 30.0]
    ),
}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would replay the body (and its signature) to another address, or drop it
    (POST becomes GET): both are failures to report."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def host_of(url: str) -> str:
    """Only the host (and port) of ``url``: what a message may say about a secret URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"
    except ValueError:
        return "?"


def scrub(text: str, url: str) -> str:
    """``text`` without ``url`` or any of its secret-bearing parts (path, query, credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
        pieces = [url, parts.path, parts.query, parts.netloc if "@" in parts.netloc else ""]
    except ValueError:
        pieces = [url]
    for piece in sorted((p for p in pieces if len(p) > 1), key=len, reverse=True):
        text = text.replace(piece, "********")
    return text


class HTTPNotifier(Notifier):
    """A channel that POSTs one JSON document to a URL (webhook, Slack, Teams)."""

    OPTIONS: ClassVar[dict[str, Option]] = HTTP_OPTIONS

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        url = options.get("url")
        if isinstance(url, str) and url and not url.startswith("${"):  # resolved: a real URL
            scheme = urllib.parse.urlsplit(url).scheme if ":" in url else ""
            if scheme not in ("http", "https") or host_of(url) == "?":
                problems.append(("url", "must be an http:// or https:// URL"))
        timeout = options.get("timeout")
        if timeout is not None and not 0 < timeout <= 300:
            problems.append(("timeout", "must be more than 0 and at most 300 seconds"))
        delays = options.get("retry_delays")
        if delays is not None and (
            len(delays) > 10 or not all(matches(d, float) and 0 <= d <= 3600 for d in delays)
        ):
            problems.append(("retry_delays", "must be at most 10 numbers of seconds, each 0-3600"))
        return problems

    @abstractmethod
    def payload(self, message: Message) -> dict[str, Any]:
        """The JSON document the receiver expects."""

    def headers(self, message: Message, body: bytes) -> dict[str, str]:
        return {}

    def send(self, message: Message) -> None:
        body = json.dumps(self.payload(message), ensure_ascii=False, separators=(",", ":")).encode()
        self.post(body, self.headers(message, body))

    def post(self, body: bytes, headers: dict[str, str]) -> None:
        url: str = self.options["url"]
        where = f"{self.kind} notifier {self.name}: POST to {host_of(url)}"
        timeout = float(self.opt("timeout"))
        try:
            target, credentials = _split_credentials(url)
            if credentials:
                headers = {"Authorization": f"Basic {credentials}", **headers}
            request = urllib.request.Request(  # noqa: S310  (check_options allows http(s) only)
                target,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": USER_AGENT,
                    **headers,
                },
            )
            with urllib.request.build_opener(_NoRedirects).open(request, timeout=timeout) as response:
                response.read(64 * 1024)
        except urllib.error.HTTPError as exc:
            raise _http_failure(where, exc, url) from None
        except TimeoutError:
            raise NotifierError(f"{where}: no answer within {timeout:g}s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                text = f"no answer within {timeout:g}s"
            elif isinstance(reason, OSError) and reason.strerror:
                text = reason.strerror
            else:
                text = str(reason)
            raise NotifierError(f"{where}: {scrub(text, url)}") from None
        except OSError as exc:
            raise NotifierError(f"{where}: {exc.strerror or type(exc).__name__}") from None
        except (ValueError, http.client.InvalidURL) as exc:  # their messages quote the URL
            raise NotifierError(f"{where}: invalid URL ({type(exc).__name__})", retryable=False) from None
        except http.client.HTTPException as exc:  # a garbled or cut-off answer
            raise NotifierError(f"{where}: {type(exc).__name__}") from None


def _http_failure(where: str, exc: urllib.error.HTTPError, url: str) -> NotifierError:
    status = exc.code
    if 300 <= status < 400:
        return NotifierError(
            f"{where}: the receiver answered with a redirect (HTTP {status}); configure the final URL",
            retryable=False,
        )
    try:
        said = exc.read(300).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        said = ""
    finally:
        exc.close()
    detail = scrub(" ".join(said.split())[:200] or str(exc.reason), url)
    return NotifierError(
        f"{where}: HTTP {status} {detail}".rstrip(),
        retryable=status >= 500 or status in (408, 425, 429),
        retry_after=_retry_after(exc.headers.get("Retry-After") if exc.headers else None),
    )


def _split_credentials(url: str) -> tuple[str, str]:
    """``url`` without ``user:password@`` (urllib would take it for the host) and those
    credentials base64-encoded for an ``Authorization: Basic`` header ("" when there are none)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, ""
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), base64.b64encode(pair.encode()).decode()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare for webhooks; the configured delay stands
