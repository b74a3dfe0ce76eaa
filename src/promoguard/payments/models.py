"""Payouts (money back to a customer, one per order and cause) and their append-only ledger.

A payout moves ``planned → submitted → succeeded | failed``, or ``planned → skipped``. It is
marked ``submitted`` (committed) before the provider is called, so a process that dies at any
instant leaves a row that says a call may have happened; the next run sends it again with the
same idempotency key and the provider answers with the refund it already made. Every step is
also a row of :class:`LedgerEntry`, which is only ever inserted (the ORM refuses updates and
deletes, and database triggers do too).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = [
    "LedgerEntry",
    "LedgerEvent",
    "Payout",
    "PayoutStatus",
    "payout_key",
]

_BIGINT = BigInteger().with_variant(Integer, "sqlite")
KEY_SEPARATOR = ":"


def payout_key(order_id: str, cause: str) -> str:
    """The idempotency key of the payout for ``order_id`` and ``cause``: ``"{order}:{cause}"``.

    One key per (order, cause) is what makes a payout happen once: the database refuses a second
    payout with the key, and the provider answers a second refund request with the first refund.
    """
    if not order_id or not cause:
        raise ValueError("a payout key needs an order id and a cause")
    if KEY_SEPARATOR in order_id:
        raise ValueError(f"an order id in a payout key cannot contain {KEY_SEPARATOR!r}")
    return f"{order_id}{KEY_SEPARATOR}{cause}"


class PayoutStatus(StrEnum):
    """``planned → submitted → succeeded | failed``; ``planned → skipped``."""

    PLANNED = "planned"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class LedgerEvent(StrEnum):
    """What a ledger row records."""

    SUBMITTED = "submitted"
    """A refund request is about to be sent (written and committed before the call)."""
    SUCCEEDED = "succeeded"
    """The provider answered that the refund succeeded: money out."""
    FAILED = "failed"
    """The payout failed for good: permanently refused, or out of attempts."""
    RETRY = "retry"
    """An attempt failed in a way worth retrying; another is scheduled."""
    CONFIRMED = "confirmed"
    """A refund the provider first reported ``pending`` is now ``succeeded``: money out."""


PAID_EVENTS = (LedgerEvent.SUCCEEDED.value, LedgerEvent.CONFIRMED.value)
"""The ledger events that move money; a payout has at most one of them."""


class Payout(Base):
    """One refund to one customer for one order and cause."""

    __tablename__ = "payouts"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_payouts_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    """``{order_id}:{cause}`` (see :func:`payout_key`), also sent to the provider."""
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    cause: Mapped[str] = mapped_column(String(160))
    """Why the money goes back, e.g. ``incident:12:overcharge`` or ``claim:c_81``."""
    amount: Mapped[int] = mapped_column(_BIGINT)
    """Minor units of ``currency``."""
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=PayoutStatus.PLANNED)
    provider_refund_id: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    """When a planned payout is due, when a submitted one's claim lapses or its pending refund
    is next looked up; None once final."""
    last_error: Mapped[str | None] = mapped_column(String(1000), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerEntry(Base):
    """One step of one payout, written once and never changed."""

    __tablename__ = "payout_ledger"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    payout_id: Mapped[int] = mapped_column(ForeignKey("payouts.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(16), index=True)
    amount: Mapped[int] = mapped_column(_BIGINT)
    """Minor units: the money out for ``succeeded``/``confirmed``, the amount asked for on
    ``submitted``, 0 otherwise."""
    currency: Mapped[str] = mapped_column(String(3))
    provider_refund_id: Mapped[str | None] = mapped_column(String(64), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@event.listens_for(LedgerEntry, "before_update")
@event.listens_for(LedgerEntry, "before_delete")
def _append_only(*_: Any) -> None:
    raise RuntimeError("the payout ledger is append-only")
