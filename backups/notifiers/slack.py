"""Slack incoming webhook: a plain ``text`` (notifications, old clients) and Block Kit blocks."""

from __future__ import annotations

from typing import Any, ClassVar

from backups.plugins import Option

from .base import HTTP_OPTIONS, HTTPNotifier, Message

ICONS = {"error": ":red_circle:", "warning": ":warning:", "info": ":large_green_circle:"}
FIELDS_PER_SECTION = 10  # Slack's limit for a section's fields


def escape(text: str) -> str:
    """Slack's mrkdwn needs only these three escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SlackNotifier(HTTPNotifier):
    kind = "slack"
    label = "Slack (incoming webhook)"
    OPTIONS: ClassVar[dict[str, Option]] = dict(HTTP_OPTIONS)

    def payload(self, message: Message) -> dict[str, Any]:
        icon = ICONS.get(message.severity, "")
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(message.subject, 150)}},
        ]
        if message.text:
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(message.text), 3000)}}
            )
        items = [
            {"type": "mrkdwn", "text": _cut(f"*{escape(name)}*\n{escape(value)}", 2000)}
            for name, value in message.fields.items()
        ]
        for start in range(0, len(items), FIELDS_PER_SECTION):
            blocks.append({"type": "section", "fields": items[start : start + FIELDS_PER_SECTION]})
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"{icon} {message.event} · {message.severity}".strip()}
                ],
            }
        )
        return {"text": _cut(f"{icon} {escape(message.subject)}".strip(), 3000), "blocks": blocks[:50]}
