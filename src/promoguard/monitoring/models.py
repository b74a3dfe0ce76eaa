"""Monitoring's tables: every alert a detector raised (and what was done about it), and each
campaign version's traffic per minute (flushed by every worker's watch)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["AlertRecord", "CampaignTraffic"]

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class AlertRecord(Base):
    """One alert: the rule that fired, on what, how far over its threshold, and the actions."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    detector: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(4))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    campaign_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    version: Mapped[int | None] = mapped_column(Integer, default=None)
    value: Mapped[str] = mapped_column(String(40))
    threshold: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(String(500))
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)
    """The actions the rule asks for."""
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What each action did: ``{"pause": "paused", "incident": "requested", ...}``."""
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class CampaignTraffic(Base):
    """What a campaign version did per minute, summed over every worker: orders it discounted,
    their list total and its own discount (the realised discount rate is discount / list)."""

    __tablename__ = "campaign_traffic"

    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    orders: Mapped[int] = mapped_column(Integer, default=0)
    list_total: Mapped[int] = mapped_column(_BIGINT, default=0)
    discount: Mapped[int] = mapped_column(_BIGINT, default=0)
