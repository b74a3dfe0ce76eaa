"""Coupon tables: how many of a template were issued, and every issued coupon."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["CouponState", "CouponStock", "IssuedCoupon"]


class CouponState(StrEnum):
    """An issued coupon's life."""

    ISSUED = "issued"
    REDEEMED = "redeemed"


class CouponStock(Base):
    """Issued count of a coupon template (a coupon campaign); raised only by a conditional
    ``UPDATE ... WHERE issued < quantity`` so the quantity is never exceeded."""

    __tablename__ = "coupon_stock"

    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    issued: Mapped[int] = mapped_column(Integer, default=0)


class IssuedCoupon(Base):
    """A coupon in a customer's wallet."""

    __tablename__ = "issued_coupons"
    __table_args__ = (Index("ix_issued_coupons_owner", "customer_id", "campaign_id", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    campaign_version: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default=CouponState.ISSUED)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    order_id: Mapped[str | None] = mapped_column(String(36), default=None)
