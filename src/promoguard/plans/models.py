"""Remediation plans as stored: one row per plan, one per action in it.

A plan is built by :mod:`promoguard.remediation` (find, re-price, classify), stored here as a
draft, approved by someone other than its author, then executed by queued jobs
(:mod:`promoguard.plans.jobs`). Items only move forward:
``planned → done | failed | skipped``; money goes out through :mod:`promoguard.payments`, whose
payout key (``<order>:<cause>``) is the item's, so a plan run twice, a crash mid-run or a
customer's own claim for the same order never pays twice.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["ItemStatus", "PlanStatus", "RemediationItem", "RemediationPlan"]

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class PlanStatus(StrEnum):
    """``draft → approved → executing → done``, or ``rejected``."""

    DRAFT = "draft"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXECUTING = "executing"
    DONE = "done"


class ItemStatus(StrEnum):
    """An item's progress."""

    PLANNED = "planned"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class RemediationPlan(Base):
    """One incident's remediation: totals by class and action, who made and approved it."""

    __tablename__ = "remediation_plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=PlanStatus.DRAFT, index=True)
    severity: Mapped[str] = mapped_column(String(2))
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``replacements``, ``by_class``, ``by_action``, ``extensions``, ``notes`` of the draft."""
    items_total: Mapped[int] = mapped_column(Integer)
    refund_total: Mapped[int] = mapped_column(_BIGINT)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(128), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    decision_reason: Mapped[str] = mapped_column(String(1000), default="")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class RemediationItem(Base):
    """One action for one order (or failed claim)."""

    __tablename__ = "remediation_items"
    __table_args__ = (
        UniqueConstraint("plan_id", "idempotency_key"),
        Index("ix_remediation_items_plan_status", "plan_id", "status"),
    )

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("remediation_plans.id"))
    order_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    claim_id: Mapped[str | None] = mapped_column(String(64), default=None)
    customer_id: Mapped[str] = mapped_column(String(128))
    klass: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    cause: Mapped[str] = mapped_column(String(160))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    difference: Mapped[int] = mapped_column(_BIGINT)
    refund: Mapped[int] = mapped_column(_BIGINT)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    coupon: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.PLANNED)
    payout_id: Mapped[int | None] = mapped_column(_BIGINT, default=None)
    coupon_id: Mapped[str | None] = mapped_column(String(36), default=None)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
