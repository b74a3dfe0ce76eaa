"""Campaign tables: the campaign, its immutable versions, and the live-rules stamp."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, ForeignKeyConstraint, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = [
    "Approval",
    "Campaign",
    "CampaignStatus",
    "CampaignVersion",
    "CatalogueRecord",
    "RulesStamp",
    "VersionState",
]


class CampaignStatus(StrEnum):
    """Where a campaign stands as a whole."""

    DRAFT = "draft"
    LIVE = "live"
    PAUSED = "paused"
    ENDED = "ended"


class VersionState(StrEnum):
    """A version's lifecycle (DESIGN.md): ``draft → in_review → approved → scheduled/live``.

    ``rejected`` ends a version a reviewer turned down (its author writes a new one);
    ``superseded`` marks a version another one replaced while live (rollback can bring it back).
    """

    DRAFT = "draft"
    IN_REVIEW = "in_review"
    REJECTED = "rejected"
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
    previous_version: Mapped[int | None] = mapped_column(Integer, default=None)
    """The version that was live before the live one: where a rollback goes."""
    rollout_bps: Mapped[int] = mapped_column(Integer, default=10_000)
    """Share of customers the live version prices for, in basis points of 10,000 buckets."""
    expected_profile: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """What monitoring holds live traffic to: the simulated profile of the version that first
    went live, until an operator adopts another version's (``POST …/profile``)."""
    profile_version: Mapped[int | None] = mapped_column(Integer, default=None)
    """The version whose simulation ``expected_profile`` is."""
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
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    findings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    """The lint findings when the version was submitted for review."""
    acknowledgements: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    """Warning code -> the reason the author gave for going ahead anyway."""
    simulation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The last impact simulation; its ``profile`` is what monitoring expects live."""
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    """When a scheduled version goes live."""
    start_rollout_bps: Mapped[int | None] = mapped_column(Integer, default=None)


class Approval(Base):
    """One department's decision on one version; a department decides once per version."""

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("campaign_id", "version", "department"),
        ForeignKeyConstraint(
            ["campaign_id", "version"],
            ["campaign_versions.campaign_id", "campaign_versions.version"],
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    department: Mapped[str] = mapped_column(String(32))
    approver: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CatalogueRecord(Base):
    """The shop's catalogue (one row): what lint and simulation check rules against."""

    __tablename__ = "catalogue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    items: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RulesStamp(Base):
    """A single row whose value goes up whenever the live rule set changes; workers poll it."""

    __tablename__ = "rules_stamp"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
