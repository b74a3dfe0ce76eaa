"""The notification outbox: one row per message to one target on one channel.

A notice is queued as rows here in the caller's transaction (or its own), and a dispatcher
delivers them later; a row is ``pending`` until a channel accepts it (``delivered``) or every
attempt failed (``dead``, the dead-letter list an operator can retry from).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["ChannelName", "Delivery", "DeliveryStatus"]


class ChannelName(StrEnum):
    """Where a message goes."""

    WEBHOOK = "webhook"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class DeliveryStatus(StrEnum):
    """A delivery's state: ``pending → delivered | dead`` (an operator may retry a dead one)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class Delivery(Base):
    """One message for one target on one channel, and how its delivery went."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (Index("ix_notification_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 (hex) of (notice key, channel, target): the same notice is never queued twice."""
    notice_key: Mapped[str] = mapped_column(String(200), index=True)
    """The notice's own key, e.g. ``incident:42:opened``."""
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(500))
    """A URL, an email address, a phone number or a device token, by channel."""
    event: Mapped[str] = mapped_column(String(64), index=True)
    """What happened, e.g. ``incident.opened``."""
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the channel sends: the webhook body, or the rendered subject/text/html."""
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    """When a pending delivery is due (while one is being sent: when its claim lapses)."""
    last_error: Mapped[str | None] = mapped_column(String(1000), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
