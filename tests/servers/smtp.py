"""A real SMTP server (aiosmtpd) on a free loopback port, keeping every message it accepts.

It runs in a thread of the test process (aiosmtpd's Controller), so tests read the received
messages directly. ``reject_next(n, code)`` makes it refuse the next ``n`` messages at DATA.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from . import free_port


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""


@dataclass
class SMTPServer:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    _rejects: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reject_next(self, count: int = 1, reply: str = "451 4.3.0 try again later") -> None:
        with self._lock:
            self._rejects.extend([reply] * count)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self._rejects.clear()

    # aiosmtpd's handler hook
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self._rejects:
                return self._rejects.pop(0)
            parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def running_smtp() -> Iterator[SMTPServer]:
    server = SMTPServer(host="127.0.0.1", port=free_port())
    controller = Controller(server, hostname=server.host, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
