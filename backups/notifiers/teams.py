"""Microsoft Teams: a Workflows "post to a channel when a webhook request is received" URL (or
a legacy incoming webhook), sent one Adaptive Card."""

from __future__ import annotations

from typing import Any, ClassVar

from backups.plugins import Option

from .base import HTTP_OPTIONS, HTTPNotifier, Message

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"  # what Teams renders everywhere (desktop, web, mobile)
COLOURS = {"error": "Attention", "warning": "Warning", "info": "Good"}


def adaptive_card(message: Message) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": message.subject,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": COLOURS.get(message.severity, "Default"),
        }
    ]
    if message.text:
        body.append({"type": "TextBlock", "text": message.text, "wrap": True})
    if message.fields:
        body.append(
            {
                "type": "FactSet",
                "facts": [{"title": name, "value": value} for name, value in message.fields.items()],
            }
        )
    body.append(
        {
            "type": "TextBlock",
            "text": f"{message.event} · {message.severity} · {message.created_at}",
            "isSubtle": True,
            "size": "Small",
            "wrap": True,
        }
    )
    return {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }


class TeamsNotifier(HTTPNotifier):
    kind = "teams"
    label = "Microsoft Teams (workflow or incoming webhook)"
    OPTIONS: ClassVar[dict[str, Option]] = dict(HTTP_OPTIONS)

    def payload(self, message: Message) -> dict[str, Any]:
        return {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": adaptive_card(message),
                }
            ],
        }
