"""Generic webhook: the message as one JSON document, signed with HMAC-SHA256.

The receiver checks ``X-Backupsite-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact
body bytes with the shared ``secret``, and may drop repeats by ``X-Backupsite-Delivery`` (the
same for every retry of one message).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar

from backups.plugins import Option

from .base import HTTP_OPTIONS, HTTPNotifier, Message

SIGNATURE_HEADER = "X-Backupsite-Signature"
EVENT_HEADER = "X-Backupsite-Event"
DELIVERY_HEADER = "X-Backupsite-Delivery"


def signature(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier(HTTPNotifier):
    kind = "webhook"
    label = "Webhook (JSON, HMAC-SHA256 signed)"
    OPTIONS: ClassVar[dict[str, Option]] = {
        **HTTP_OPTIONS,
        "secret": Option(str, "the HMAC-SHA256 key the receiver shares, as a reference", secret=True),
    }

    def payload(self, message: Message) -> dict[str, Any]:
        return {"source": "backupsite", **message.as_dict()}

    def headers(self, message: Message, body: bytes) -> dict[str, str]:
        headers = {EVENT_HEADER: message.event, DELIVERY_HEADER: message.id}
        if self.opt("secret"):
            headers[SIGNATURE_HEADER] = signature(self.options["secret"], body)
        return headers
