"""Coupon use cases: the claimable templates, claiming one into a wallet, and the wallet.

A template is a live ``coupon`` campaign: its spec says the quantity and the per-customer limit.
A claim raises two counters with conditional writes in one transaction, the template's issued
count (``issued < quantity``) and the customer's claim count (``claimed < per_user_limit``), so
neither limit can be passed by concurrent claims on any backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard import audit
from promoguard.campaigns.models import Campaign, CampaignStatus, CampaignVersion
from promoguard.coupons.models import CouponState, CouponStock, IssuedCoupon
from promoguard.errors import ConflictError, NotFoundError
from promoguard.orders.usage import bump_usage
from promoguard.promotions.rules import Coupon, parse_rule

__all__ = ["Template", "claim", "list_templates", "wallet"]


class Template:
    """A claimable coupon: the live spec and how many are issued."""

    def __init__(self, campaign: Campaign, spec: Coupon, issued: int) -> None:
        self.campaign = campaign
        self.spec = spec
        self.issued = issued

    @property
    def remaining(self) -> int:
        """Coupons still claimable."""
        return max(0, self.spec.quantity - self.issued)


async def _template(session: AsyncSession, campaign_id: str) -> Template:
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None or campaign.kind != "coupon":
        raise NotFoundError("coupon_template_not_found", f"no coupon template {campaign_id!r}")
    if campaign.status != CampaignStatus.LIVE or campaign.live_version is None:
        raise ConflictError(
            "coupon_not_claimable", f"coupon {campaign_id!r} is {campaign.status}, not live"
        )
    version = await session.get(CampaignVersion, (campaign_id, campaign.live_version))
    stock = await session.get(CouponStock, campaign_id)
    assert version is not None
    spec = parse_rule(version.spec)
    assert isinstance(spec, Coupon)
    return Template(campaign, spec, stock.issued if stock else 0)


async def list_templates(session: AsyncSession) -> list[Template]:
    """Every live coupon template."""
    ids = await session.scalars(
        select(Campaign.id).where(Campaign.kind == "coupon", Campaign.status == CampaignStatus.LIVE)
    )
    return [await _template(session, campaign_id) for campaign_id in ids.all()]


async def claim(
    session: AsyncSession, *, campaign_id: str, customer_id: str, now: datetime
) -> IssuedCoupon:
    """Issue one coupon of a live template to a customer, within quantity and per-user limit."""
    template = await _template(session, campaign_id)
    spec = template.spec
    if spec.valid_until is not None and now >= spec.valid_until:
        raise ConflictError("coupon_not_claimable", f"coupon {campaign_id!r} has expired")
    claimed = await bump_usage(
        session,
        customer_id=customer_id,
        counter=f"claim:{campaign_id}",
        by=1,
        limit=spec.per_user_limit,
    )
    if not claimed:
        raise ConflictError(
            "coupon_limit_reached",
            f"customer {customer_id!r} already holds the most coupons {campaign_id!r} allows "
            f"({spec.per_user_limit})",
        )
    issued = await session.execute(
        update(CouponStock)
        .where(CouponStock.campaign_id == campaign_id, CouponStock.issued < spec.quantity)
        .values(issued=CouponStock.issued + 1)
        .returning(CouponStock.issued)
    )
    if issued.scalar_one_or_none() is None:
        # The usage counter raised above is rolled back with this transaction.
        raise ConflictError("coupon_sold_out", f"coupon {campaign_id!r} is all claimed")
    coupon = IssuedCoupon(
        id=str(uuid.uuid4()),
        campaign_id=campaign_id,
        campaign_version=spec.version,
        customer_id=customer_id,
        state=CouponState.ISSUED,
        issued_at=now,
    )
    session.add(coupon)
    audit.record(
        session,
        actor=customer_id,
        action="coupon.claimed",
        subject_type="coupon",
        subject_id=coupon.id,
        detail={"campaign": campaign_id, "version": spec.version},
    )
    await session.flush()
    return coupon


async def wallet(
    session: AsyncSession, *, customer_id: str, state: str | None = None
) -> Sequence[IssuedCoupon]:
    """A customer's coupons, newest first."""
    query = select(IssuedCoupon).where(IssuedCoupon.customer_id == customer_id)
    if state is not None:
        query = query.where(IssuedCoupon.state == state)
    rows = await session.scalars(query.order_by(IssuedCoupon.issued_at.desc(), IssuedCoupon.id))
    return rows.all()


async def grant(
    session: AsyncSession,
    *,
    campaign_id: str,
    spec: dict[str, Any] | None,
    holders: Sequence[tuple[str, str]],
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """Give coupons of a new coupon campaign to chosen customers: compensation, a campaign
    extended for its affected customers.

    A campaign that does not exist yet is made from ``spec`` (a coupon rule), approved by what
    approved the grant (``reason``, on its timeline) and made live with no stock left to claim,
    so nobody else can claim it; an existing one (a coupon re-issued) is used as it is. Each
    ``(coupon id, customer)`` of ``holders`` is issued once: the ids are the caller's
    deterministic ones, and an id issued before is left as it is.
    """
    from promoguard.campaigns import service as campaigns  # noqa: PLC0415 (campaigns use coupons)
    from promoguard.campaigns.models import VersionState  # noqa: PLC0415
    from promoguard.store.db import upsert_insert  # noqa: PLC0415

    campaign = await session.get(Campaign, campaign_id)
    if campaign is None:
        if spec is None:
            raise NotFoundError("campaign_not_found", f"there is no campaign {campaign_id!r}")
        campaign, version = await campaigns.create_campaign(session, spec=spec, author=actor)
        version.state = VersionState.APPROVED
        session.add(CouponStock(campaign_id=campaign_id, issued=spec["quantity"]))
        await session.flush()
        await campaigns.activate(
            session, campaign_id=campaign_id, version=1, actor=actor, reason=reason
        )
    rows = [
        {
            "id": coupon_id,
            "campaign_id": campaign_id,
            "campaign_version": campaign.live_version or 1,
            "customer_id": customer,
            "state": CouponState.ISSUED.value,
            "issued_at": now,
        }
        for coupon_id, customer in holders
    ]
    for start in range(0, len(rows), 1000):
        await session.execute(
            upsert_insert(session)(IssuedCoupon)
            .values(rows[start : start + 1000])
            .on_conflict_do_nothing(index_elements=["id"])
        )
