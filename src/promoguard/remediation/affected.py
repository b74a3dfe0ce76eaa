"""Find an incident's affected orders with a few set-based queries.

An order is affected when it was created in the incident's window (``window_start`` to
``window_end``, open-ended while the incident is unresolved) and:

* it got a discount from one of the incident's faulty versions (its ``order_discounts`` row), or
* it was priced while a faulty version was live (its quote's rules stamp is one at which the
  version was live, see :class:`~promoguard.remediation.corrected.LiveHistory`): a faulty
  version can also *deny* a discount (a threshold keyed too high), and then it leaves no row;
* or its stored quote says it was priced **degraded** (a dependency such as the member-tier
  service failed, and the quote left out what it could not check).

Checkout stores a degraded quote's ``degraded`` list (and the tier the customer claimed) in the
quote it records with the order.

**Failed coupon claims**: the claim route remembers refused claims that a fault can cause (sold
out, not claimable) as ``coupon.claim_refused`` audit entries, committed on their own;
:func:`failed_claims` finds those of the incident's campaigns in its window, and
:func:`~promoguard.remediation.plan.build_plan` takes them as :class:`FailedClaim` values.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import String, cast, exists, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from promoguard.audit import AuditEntry
from promoguard.campaigns.models import Campaign, CampaignVersion
from promoguard.orders.models import Order, OrderDiscountRow, QuoteRecord
from promoguard.remediation.corrected import LiveHistory, Version

__all__ = ["Affected", "FailedClaim", "failed_claims", "find_affected"]


class Affected(NamedTuple):
    """One affected order, and whether its quote was degraded."""

    order_id: str
    degraded: bool


class FailedClaim(NamedTuple):
    """A coupon claim that failed during the incident (from outside the store: see above)."""

    claim_id: str
    customer_id: str
    campaign_id: str
    coupon_value: int
    at: datetime


async def find_affected(
    session: AsyncSession,
    *,
    versions: Iterable[Version],
    start: datetime,
    end: datetime | None,
    history: LiveHistory | None = None,
) -> list[Affected]:
    """The affected orders, oldest first (see the module docstring).

    Args:
        session: a read session.
        versions: the faulty campaign versions.
        start: the window's start.
        end: the window's end, None while open.
        history: what was live when; without it only orders a faulty version discounted count.
    """
    faulty = sorted(set(versions))
    window = [Order.created_at >= start]
    if end is not None:
        window.append(Order.created_at <= end)
    priced_by: list[ColumnElement[bool]] = []
    if faulty:
        priced_by.append(
            exists().where(
                OrderDiscountRow.order_id == Order.id,
                tuple_(OrderDiscountRow.rule_id, OrderDiscountRow.rule_version).in_(faulty),
            )
        )
        stamps = history.stamps_with(faulty) if history is not None and history.exact else []
        if stamps:
            priced_by.append(QuoteRecord.rules_stamp.in_(stamps))
    found: dict[str, bool] = {}
    if priced_by:
        rows = await session.execute(
            select(Order.id)
            .join(QuoteRecord, QuoteRecord.id == Order.quote_id)
            .where(*window, or_(*priced_by))
            .order_by(Order.created_at, Order.id)
        )
        found = dict.fromkeys(rows.scalars().all(), False)
    # A degraded quote: a non-empty "degraded" list in the stored quote, compared as JSON text
    # (the same on SQLite and PostgreSQL; a missing key is NULL on both).
    listed = cast(QuoteRecord.quote["degraded"].as_json(), String)
    degraded = await session.execute(
        select(Order.id)
        .join(QuoteRecord, QuoteRecord.id == Order.quote_id)
        .where(*window, listed.is_not(None), listed.not_in(["[]", "null"]))
        .order_by(Order.created_at, Order.id)
    )
    for order_id in degraded.scalars().all():
        found[order_id] = True
    return [Affected(order_id, flag) for order_id, flag in found.items()]


async def failed_claims(
    session: AsyncSession,
    *,
    campaigns: Iterable[str],
    start: datetime,
    end: datetime | None,
) -> list[FailedClaim]:
    """The coupon claims refused in the window on the incident's campaigns (those checkout
    remembers: sold out, not claimable; see ``promoguard.coupons.routes``), one per customer and
    campaign, each with the coupon's value (its discount; 0 for a percent coupon)."""
    wanted = sorted(set(campaigns))
    if not wanted:
        return []
    window = [AuditEntry.at >= start] + ([AuditEntry.at <= end] if end is not None else [])
    rows = await session.execute(
        select(AuditEntry.id, AuditEntry.subject_id, AuditEntry.detail, AuditEntry.at)
        .where(
            AuditEntry.action == "coupon.claim_refused",
            AuditEntry.subject_id.in_(wanted),
            *window,
        )
        .order_by(AuditEntry.id)
    )
    values: dict[str, int] = {}
    found: dict[tuple[str, str], FailedClaim] = {}
    for entry_id, campaign_id, detail, at in rows.all():
        customer = str((detail or {}).get("customer_id", ""))
        if not customer or (campaign_id, customer) in found:
            continue
        if campaign_id not in values:
            values[campaign_id] = await _coupon_value(session, campaign_id)
        found[(campaign_id, customer)] = FailedClaim(
            claim_id=f"claim-{entry_id}",
            customer_id=customer,
            campaign_id=campaign_id,
            coupon_value=values[campaign_id],
            at=at,
        )
    return list(found.values())


async def _coupon_value(session: AsyncSession, campaign_id: str) -> int:
    spec = await session.scalar(
        select(CampaignVersion.spec)
        .join(Campaign, Campaign.id == CampaignVersion.campaign_id)
        .where(Campaign.id == campaign_id)
        .order_by(CampaignVersion.version.desc())
        .limit(1)
    )
    discount = (spec or {}).get("discount")
    return discount if isinstance(discount, int) else 0
