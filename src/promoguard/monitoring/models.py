"""The alerts table: every alert a detector raised, and what was done about it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["AlertRecord"]


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
