"""Campaign tables: the campaign, its immutable versions, and the live-rules stamp."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["Campaign", "CampaignStatus", "CampaignVersion", "RulesStamp", "VersionState"]


class CampaignStatus(StrEnum):
    """Where a campaign stands as a whole."""

    DRAFT = "draft"
    LIVE = "live"
    PAUSED = "paused"
    ENDED = "ended"


class VersionState(StrEnum):
    """A version's lifecycle (DESIGN.md). ``in_review``, ``approved`` and ``scheduled`` belong to
    the review workflow; ``superseded`` marks a version another one replaced while live."""

    DRAFT = "draft"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    LIVE = "live"
    PAUSED = "paused"
    ENDED = "ended"
    SUPERSEDED = "superseded"


class Campaign(Base):
    """A promotion as operators name it; its rules live in :class:`CampaignVersion` rows."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT, index=True)
    live_version: Mapped[int | None] = mapped_column(Integer, default=None)
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CampaignVersion(Base):
    """One immutable version of a campaign's rule spec. Only ``state`` ever changes."""

    __tablename__ = "campaign_versions"

    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="RESTRICT"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=VersionState.DRAFT)
    author: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RulesStamp(Base):
    """A single row whose value goes up whenever the live rule set changes; workers poll it."""

    __tablename__ = "rules_stamp"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
