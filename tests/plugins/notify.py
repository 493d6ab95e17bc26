"""A real SMTP server (for the session) and a real HTTP receiver (per test) on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.http_receiver import HTTPReceiver, running_receiver
from tests.servers.smtp import SMTPServer, running_smtp


@pytest.fixture(scope="session")
def smtp_session() -> Iterator[SMTPServer]:
    with running_smtp() as server:
        yield server


@pytest.fixture
def smtp_server(smtp_session: SMTPServer, settings) -> SMTPServer:
    """The SMTP server, empty, with Django's mail settings pointed at it (the test runner
    otherwise keeps mail in memory)."""
    smtp_session.clear()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = smtp_session.host
    settings.EMAIL_PORT = smtp_session.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 5
    return smtp_session


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    with running_receiver() as server:
        yield server
