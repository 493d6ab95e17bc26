"""Notification channels: the registry of kinds and :func:`build_notifier`.

A kind is one module with one :class:`Notifier` subclass, imported only when used. The
contract is in :mod:`backups.notifiers.base`; the events, the choice of channels and the
Notification rows are the service's (:mod:`backups.notifications`).
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Message, Notifier, NotifierError, Option

NOTIFIER_KINDS = ("email", "webhook", "slack", "teams", "audit")
_CLASSES: dict[str, str] = {
    "email": "backups.notifiers.email.EmailNotifier",
    "webhook": "backups.notifiers.webhook.WebhookNotifier",
    "slack": "backups.notifiers.slack.SlackNotifier",
    "teams": "backups.notifiers.teams.TeamsNotifier",
    "audit": "backups.notifiers.audit.AuditNotifier",
}
LABELS = {
    "email": "Email",
    "webhook": "Webhook",
    "slack": "Slack",
    "teams": "Microsoft Teams",
    "audit": "Audit file",
}

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
    if kind not in NOTIFIER_KINDS:
        raise NotifierError(
            f"unknown notifier kind {kind!r}; use one of {', '.join(NOTIFIER_KINDS)}", retryable=False
        )
    module, _, name = _CLASSES[kind].rpartition(".")
    cls: type[Notifier] = getattr(importlib.import_module(module), name)
    return cls


def notifier_kind_choices() -> list[tuple[str, str]]:
    return [(kind, LABELS[kind]) for kind in NOTIFIER_KINDS]


def build_notifier(name: str, kind: str, options: dict[str, Any]) -> Notifier:
    """Build a notifier from plain values (options with secrets already resolved)."""
    try:
        cls = notifier_class(kind)
    except NotifierError as exc:
        raise NotifierError(f"{name}: {exc}", retryable=False) from None
    return cls(name, options)
