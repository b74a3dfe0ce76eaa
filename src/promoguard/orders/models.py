"""Order tables: every order remembers how it was priced, line by line and rule by rule."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = [
    "BuyGroup",
    "Counter",
    "CustomerUsage",
    "GroupMember",
    "GroupMemberSignal",
    "GroupState",
    "IdempotencyRecord",
    "IdentityMark",
    "LineAllocation",
    "Order",
    "OrderDiscountRow",
    "OrderEvent",
    "OrderLine",
    "OrderStatus",
    "QuoteRecord",
    "Redemption",
    "RefundRequest",
    "Reservation",
    "ReservationState",
]

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class OrderStatus(StrEnum):
    """An order's state, as the shop's events move it."""

    CREATED = "created"
    PAID = "paid"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    EXPIRED = "expired"
    """Never paid within the reservation time: the sweeper released what it held."""


class QuoteRecord(Base):
    """A quote that was committed into an order: the exact priced result the token vouched for."""

    __tablename__ = "quotes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    total: Mapped[int] = mapped_column(_BIGINT)
    rules_stamp: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    quote: Mapped[dict[str, Any]] = mapped_column(JSON)


class Order(Base):
    """An order committed from a quote token."""

    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    quote_id: Mapped[str] = mapped_column(ForeignKey("quotes.id"), unique=True)
    status: Mapped[str] = mapped_column(String(24), default=OrderStatus.CREATED, index=True)
    currency: Mapped[str] = mapped_column(String(3))
    list_total: Mapped[int] = mapped_column(_BIGINT)
    discount_total: Mapped[int] = mapped_column(_BIGINT)
    total: Mapped[int] = mapped_column(_BIGINT)
    refunded_total: Mapped[int] = mapped_column(_BIGINT, default=0)
    priced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    customer_facts: Mapped[dict[str, Any]] = mapped_column(JSON)

    lines: Mapped[list[OrderLine]] = relationship(
        order_by="OrderLine.position", lazy="raise", cascade="all"
    )
    discounts: Mapped[list[OrderDiscountRow]] = relationship(
        order_by="OrderDiscountRow.id", lazy="raise", cascade="all"
    )


class OrderLine(Base):
    """A priced line: list, discount and final amount, and what has been refunded of it."""

    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(128))
    tags: Mapped[list[str]] = mapped_column(JSON)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(_BIGINT)
    floor_price: Mapped[int | None] = mapped_column(_BIGINT, default=None)
    list_amount: Mapped[int] = mapped_column(_BIGINT)
    discount: Mapped[int] = mapped_column(_BIGINT)
    final_amount: Mapped[int] = mapped_column(_BIGINT)
    refunded_quantity: Mapped[int] = mapped_column(Integer, default=0)
    refunded_amount: Mapped[int] = mapped_column(_BIGINT, default=0)

    allocations: Mapped[list[LineAllocation]] = relationship(
        order_by="LineAllocation.id", lazy="raise", cascade="all"
    )


class OrderDiscountRow(Base):
    """One rule version's whole discount on an order (the campaign version that was applied)."""

    __tablename__ = "order_discounts"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(64), index=True)
    rule_version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    layer: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(_BIGINT)


class LineAllocation(Base):
    """The share of one rule version's discount that one order line carries."""

    __tablename__ = "line_allocations"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_lines.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(_BIGINT)


class Redemption(Base):
    """Who used which rule version (and coupon), in which order, when; released on cancel."""

    __tablename__ = "redemptions"
    __table_args__ = (Index("ix_redemptions_rule", "rule_id", "rule_version"),)

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    units: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(_BIGINT)
    coupon_id: Mapped[str | None] = mapped_column(String(36), default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class CustomerUsage(Base):
    """A per-customer counter (flash-sale units bought, coupons claimed), raised only by a
    conditional upsert so a limit is never passed, whatever the concurrency."""

    __tablename__ = "customer_usage"

    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    counter: Mapped[str] = mapped_column(String(96), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class OrderEvent(Base):
    """Something the shop told us about an order: paid, shipped, cancelled, refunded."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(_BIGINT, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyRecord(Base):
    """A request made with an ``Idempotency-Key``: its body hash and the response to replay."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Counter(Base):
    """A named amount used against a limit (flash-sale stock, a budget, a per-customer cap),
    raised only by a conditional upsert so the limit holds whatever the concurrency. With Redis
    configured the counters live in Redis instead; :class:`Reservation` rows are the record."""

    __tablename__ = "counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    used: Mapped[int] = mapped_column(_BIGINT, default=0)


class ReservationState(StrEnum):
    """A reservation's life (DESIGN.md)."""

    RESERVED = "reserved"
    CONFIRMED = "confirmed"
    RELEASED = "released"


class Reservation(Base):
    """What one order took from one counter: reserved at checkout, confirmed on payment,
    released on cancellation or when the order expires unpaid."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_due", "state", "expires_at"),)

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    key: Mapped[str] = mapped_column(String(200), index=True)
    amount: Mapped[int] = mapped_column(_BIGINT)
    state: Mapped[str] = mapped_column(String(16), default=ReservationState.RESERVED)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdentityMark(Base):
    """One identity signal (a hashed phone, device, payment fingerprint, address or account)
    seen on one order. An identity with a mark has ordered before; cancelled and expired
    orders lose their marks."""

    __tablename__ = "identity_marks"

    signal: Mapped[str] = mapped_column(String(80), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), primary_key=True, index=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GroupState(StrEnum):
    """A buying group's life."""

    OPEN = "open"
    COMPLETE = "complete"
    EXPIRED = "expired"


class BuyGroup(Base):
    """A group-buy (拼团) group: complete when ``size`` distinct identities have all paid."""

    __tablename__ = "buy_groups"
    __table_args__ = (Index("ix_buy_groups_due", "state", "expires_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    leader_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default=GroupState.OPEN)
    members: Mapped[int] = mapped_column(Integer, default=0)
    paid: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class GroupMember(Base):
    """A customer in a group, and the order they bought with at the group price."""

    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(ForeignKey("buy_groups.id"), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    order_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    paid: Mapped[bool] = mapped_column(Boolean, default=False)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GroupMemberSignal(Base):
    """A member's identity signals: the key makes one identity join a group only once."""

    __tablename__ = "group_member_signals"

    group_id: Mapped[str] = mapped_column(ForeignKey("buy_groups.id"), primary_key=True)
    signal: Mapped[str] = mapped_column(String(80), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))


class RefundRequest(Base):
    """A refund handed over to the payout path (the remediation issue pays it), once per
    (order, cause) whatever the retries."""

    __tablename__ = "refund_requests"
    __table_args__ = (UniqueConstraint("order_id", "cause"),)

    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    cause: Mapped[str] = mapped_column(String(120))
    amount: Mapped[int] = mapped_column(_BIGINT)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
