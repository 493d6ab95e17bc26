"""Notification channels: the registry of kinds and :func:`build_notifier`.

A kind is one module with one :class:`Notifier` subclass, imported only when used. The
contract is in :mod:`backups.notifiers.base`; the events, the choice of channels and the
Notification rows are the service's (:mod:`backups.notifications`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from backups.plugins import Option, Registry

from .base import Message, Notifier, NotifierError

REGISTRY: Registry[Notifier] = Registry(
    "notifier kind",
    {
        "email": "backups.notifiers.email.EmailNotifier",
        "webhook": "backups.notifiers.webhook.WebhookNotifier",
        "slack": "backups.notifiers.slack.SlackNotifier",
        "teams": "backups.notifiers.teams.TeamsNotifier",
        "audit": "backups.notifiers.audit.AuditNotifier",
    },
    labels={
        "email": "Email",
        "webhook": "Webhook",
        "slack": "Slack",
        "teams": "Microsoft Teams",
        "audit": "Audit file",
    },
    error=partial(NotifierError, retryable=False),
)
NOTIFIER_KINDS = tuple(REGISTRY.keys())
LABELS = REGISTRY.labels

__all__ = [
    "NOTIFIER_KINDS",
    "Message",
    "Notifier",
    "NotifierError",
    "Option",
    "build_notifier",
    "notifier_class",
    "notifier_kind_choices",
]


def notifier_class(kind: str) -> type[Notifier]:
    return REGISTRY.load(kind)


def notifier_kind_choices() -> list[tuple[str, str]]:
    return REGISTRY.choices()


def build_notifier(name: str, kind: str, options: dict[str, Any]) -> Notifier:
    """Build a notifier from plain values (options with secrets already resolved)."""
    try:
        cls = notifier_class(kind)
    except NotifierError as exc:
        raise NotifierError(f"{name}: {exc}", retryable=False) from None
    return cls(name, options)
