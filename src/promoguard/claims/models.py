"""The claims tables: one row per customer application, and its append-only status history.

A claim is a customer's own request for a refund or compensation for one order (see
``docs/claims.md``). Its lifecycle is
``submitted → verified → approved | rejected | needs_review → paid`` (a claim in review is
approved or rejected by a person); a duplicate of an open claim is stored ``merged`` with
``merged_into`` naming the open one. Every change is a :class:`ClaimEvent` row, which is only
ever inserted (the ORM refuses updates and deletes, and database triggers do too).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, event
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["Claim", "ClaimEvent", "ClaimReason", "ClaimStatus"]

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class ClaimStatus(StrEnum):
    """``submitted → verified → approved | rejected | needs_review → paid``; ``merged``."""

    SUBMITTED = "submitted"
    VERIFIED = "verified"
    APPROVED = "approved"
    REJECTED = "rejected"
    NEEDS_REVIEW = "needs_review"
    PAID = "paid"
    MERGED = "merged"
    """A duplicate of an open claim, folded into it (``merged_into``); never decided itself."""


class ClaimReason(StrEnum):
    """What the customer says went wrong."""

    PRICE_WRONG = "price_wrong"
    DISCOUNT_MISSING = "discount_missing"
    COUPON_FAILED = "coupon_failed"
    OVERSOLD = "oversold"
    OTHER = "other"


class Claim(Base):
    """One customer application for one order."""

    __tablename__ = "claims"
    __table_args__ = (Index("ix_claims_status_due", "status", "due_at"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    """``cl_`` and 16 random hex digits: public, unguessable."""
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    reason: Mapped[str] = mapped_column(String(24))
    message: Mapped[str] = mapped_column(String(2000), default="")
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    locale: Mapped[str] = mapped_column(String(2), default="zh")
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    phone: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(16), default=ClaimStatus.SUBMITTED, index=True)
    open_key: Mapped[str | None] = mapped_column(String(200), default=None, unique=True)
    """``<order>:<customer>`` while the claim is open, None once it is closed: the database
    admits one open claim per order and customer, so a duplicate merges even under races."""
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), default=None)
    klass: Mapped[str | None] = mapped_column(String(16), default=None)
    """The order's class under the matched incident (``overcharged``, …)."""
    action: Mapped[str | None] = mapped_column(String(32), default=None)
    cause: Mapped[str | None] = mapped_column(String(160), default=None)
    """``incident:<id>:<class>`` (a plan item's cause) or ``claim:<id>`` (a manual payout)."""
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    amount: Mapped[int] = mapped_column(_BIGINT, default=0)
    """The money paid back, minor units of ``currency``."""
    coupon: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """``{"value", "min_spend", "valid_days"}`` of the compensation coupon, if any."""
    coupon_id: Mapped[str | None] = mapped_column(String(36), default=None)
    payout_id: Mapped[int | None] = mapped_column(_BIGINT, default=None)
    decision_code: Mapped[str | None] = mapped_column(String(32), default=None)
    """A stable code for the outcome (``matched_incident``, ``not_affected``, …)."""
    decision_reason: Mapped[str] = mapped_column(String(1000), default="")
    """The outcome in words, shown to the customer."""
    decided_by: Mapped[str | None] = mapped_column(String(128), default=None)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """The response deadline: the claim should be decided by then."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    merged_into: Mapped[str | None] = mapped_column(String(24), default=None)


class ClaimEvent(Base):
    """One step of a claim's history: who, when, what it became and why. Written once."""

    __tablename__ = "claim_events"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    claim_id: Mapped[str] = mapped_column(ForeignKey("claims.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(24))
    """The status reached (``submitted``, ``verified``, ``approved``, …) or ``merged``,
    ``payout_failed``, ``note``."""
    status: Mapped[str] = mapped_column(String(16))
    """The claim's status after this step."""
    message: Mapped[str] = mapped_column(String(2000), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    internal: Mapped[bool] = mapped_column(default=False)
    """A note for the team only: left out of the customer's view."""


@event.listens_for(ClaimEvent, "before_update")
@event.listens_for(ClaimEvent, "before_delete")
def _append_only(*_: Any) -> None:
    raise RuntimeError("a claim's history is append-only")
