"""Email through Django's mail API (the ``EMAIL_*`` settings: SMTP host, port, TLS, login)."""

from __future__ import annotations

import smtplib
from email.utils import parseaddr
from typing import Any, ClassVar

from django.core.mail import EmailMessage, get_connection

from backups.plugins import Option

from .base import Message, Notifier, NotifierError

SEVERITY_TAGS = {"error": "[FAILED] ", "warning": "[WARNING] ", "info": ""}


def parse_addresses(value: str | list[str]) -> list[str]:
    """``a@x, b@y; c@z`` or a list of them, as a clean list."""
    items = value if isinstance(value, list) else [value]
    return [part.strip() for item in items for part in item.replace(";", ",").split(",") if part.strip()]


def bad_addresses(addresses: list[str]) -> list[str]:
    return [a for a in addresses if "@" not in parseaddr(a)[1] or any(c.isspace() for c in parseaddr(a)[1])]


class EmailNotifier(Notifier):
    kind = "email"
    label = "Email"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "to": Option(list, "the recipients' addresses", required=True),
        "from_email": Option(str, "the sender (default: the DEFAULT_FROM_EMAIL setting)"),
        "subject_prefix": Option(str, "put before every subject", default="[Backupsite] "),
        "retry_delays": Option(list, "seconds to wait before each retry, e.g. [5, 30]", default=[]),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        to = options.get("to")
        if isinstance(to, list):
            if not all(isinstance(item, str) for item in to):
                problems.append(("to", "must be a list of email addresses"))
            elif bad := bad_addresses(parse_addresses(to)):
                problems.append(("to", f"not an email address: {', '.join(bad)}"))
        delays = options.get("retry_delays")
        if delays is not None and not all(
            isinstance(d, int | float) and not isinstance(d, bool) and 0 <= d <= 3600 for d in delays
        ):
            problems.append(("retry_delays", "must be numbers of seconds, each 0-3600"))
        return problems

    def send(self, message: Message) -> None:
        tag = SEVERITY_TAGS.get(message.severity, "")
        subject = " ".join(f"{self.opt('subject_prefix')}{tag}{message.subject}".split())  # no header folding
        email = EmailMessage(
            subject=subject,
            body=message.plain_text() + "\n",
            from_email=self.opt("from_email") or None,  # None: DEFAULT_FROM_EMAIL
            to=parse_addresses(self.options["to"]),
            headers={"X-Backupsite-Event": message.event, "X-Backupsite-Delivery": message.id},
        )
        connection = get_connection(fail_silently=False)
        try:
            with connection:
                connection.send_messages([email])
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(
                f"{address} ({code} {text.decode(errors='replace')})"
                for address, (code, text) in exc.recipients.items()
            )
            raise NotifierError(
                f"email notifier {self.name}: recipients refused: {refused}", retryable=False
            ) from None
        except smtplib.SMTPResponseException as exc:
            said = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else exc.smtp_error
            )
            raise NotifierError(
                f"email notifier {self.name}: the mail server said {exc.smtp_code} {said}",
                retryable=exc.smtp_code < 500,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            server = f"{getattr(connection, 'host', '?')}:{getattr(connection, 'port', '?')}"
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            )
            raise NotifierError(
                f"email notifier {self.name}: cannot send through {server}: {reason}"
            ) from None
