"""Webhooks and job events (docs/webhooks.md).

Receivers check what they get with `verify`::

    event = pageq.webhooks.verify(request.headers, raw_body, "whsec_...")

Senders manage subscriptions with ``app.webhooks`` (`Webhooks`), ``pageq webhooks ...`` or the HTTP API;
in-process code subscribes with ``app.on("job.dead", handler)`` or reads ``app.events(...)``.
"""

from pageq.security.webhook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TOLERANCE,
    WEBHOOK_HEADER,
    SignatureError,
    new_secret,
    sign,
    signature,
    verify,
)
from pageq.webhooks.events import EVENT_TYPES, Event
from pageq.webhooks.manage import Delivery, Webhook, Webhooks
from pageq.webhooks.settings import QUEUE, TASK, WebhookSettings

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "EVENT_TYPES",
    "QUEUE",
    "SIGNATURE_HEADER",
    "TASK",
    "TOLERANCE",
    "WEBHOOK_HEADER",
    "Delivery",
    "Event",
    "SignatureError",
    "Webhook",
    "WebhookSettings",
    "Webhooks",
    "new_secret",
    "sign",
    "signature",
    "verify",
]
