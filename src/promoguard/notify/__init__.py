"""Notifications: signed webhooks, email, SMS and app push, from a persistent outbox.

An incident module builds a :class:`Notifications` once (``Notifications.from_settings``) and
calls ``await notifications.send(Notice(...))``; the app starts and stops its dispatcher. See
docs/notifications.md.
"""

from promoguard.notify.channels import (
    Adapter,
    AdapterChannel,
    Channel,
    DeliveryError,
    EmailChannel,
    FileAdapter,
    LogAdapter,
    ShortMessage,
    WebhookChannel,
)
from promoguard.notify.models import ChannelName, Delivery, DeliveryStatus
from promoguard.notify.outbox import Dispatcher, DispatchReport, RetryPolicy
from promoguard.notify.service import Notice, Notifications, Recipient
from promoguard.notify.templates import (
    Rendered,
    TemplateContextError,
    UnknownTemplateError,
    render,
)

__all__ = [
    "Adapter",
    "AdapterChannel",
    "Channel",
    "ChannelName",
    "Delivery",
    "DeliveryError",
    "DeliveryStatus",
    "DispatchReport",
    "Dispatcher",
    "EmailChannel",
    "FileAdapter",
    "LogAdapter",
    "Notice",
    "Notifications",
    "Recipient",
    "Rendered",
    "RetryPolicy",
    "ShortMessage",
    "TemplateContextError",
    "UnknownTemplateError",
    "WebhookChannel",
    "render",
]
