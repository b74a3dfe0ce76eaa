"""``/v1/coupons``: claimable templates, claims; ``/v1/customers/{id}/coupons``: the wallet."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from promoguard import audit
from promoguard.api import PROBLEMS, Services, Svc, allow, now
from promoguard.coupons import service
from promoguard.coupons.models import CouponState, IssuedCoupon
from promoguard.errors import PromoguardError
from promoguard.security.keys import Role

log = logging.getLogger(__name__)

router = APIRouter(tags=["coupons"], responses=PROBLEMS)

Id = Annotated[str, Path(min_length=1, max_length=128)]


class ClaimIn(BaseModel):
    """Who claims the coupon."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=128)


class CouponOut(BaseModel):
    """A coupon in a wallet."""

    id: str
    campaign_id: str
    campaign_version: int
    customer_id: str
    state: str
    issued_at: datetime
    redeemed_at: datetime | None
    order_id: str | None


class TemplateOut(BaseModel):
    """A claimable coupon."""

    campaign_id: str
    name: str
    benefit: str
    min_spend: int
    discount: int | None
    percent: str | None
    cap: int | None
    per_user_limit: int
    quantity: int
    remaining: int
    valid_until: datetime | None


def _coupon(row: IssuedCoupon) -> CouponOut:
    return CouponOut.model_validate(row, from_attributes=True)


@router.get(
    "/v1/coupons/templates",
    summary="Live coupon templates and what is left of each",
    dependencies=[allow(Role.STOREFRONT, Role.OPERATOR, Role.AUDITOR, route="coupon_templates")],
)
async def templates(svc: Svc) -> list[TemplateOut]:
    async with svc.db.read() as session:
        found = await service.list_templates(session)
    return [
        TemplateOut(
            campaign_id=t.campaign.id,
            name=t.campaign.name,
            benefit=t.spec.benefit,
            min_spend=t.spec.min_spend,
            discount=t.spec.discount,
            percent=None if t.spec.percent is None else str(t.spec.percent),
            cap=t.spec.cap,
            per_user_limit=t.spec.per_user_limit,
            quantity=t.spec.quantity,
            remaining=t.remaining,
            valid_until=t.spec.valid_until,
        )
        for t in found
    ]


@router.post(
    "/v1/coupons/{template}/claims",
    status_code=201,
    summary="Claim a coupon",
    dependencies=[allow(Role.STOREFRONT, route="coupon_claim")],
)
async def claim(template: Id, body: ClaimIn, svc: Svc) -> CouponOut:
    try:
        await svc.guard.limits.hit("coupon_claim", {"customer": body.customer_id})
        async with svc.db.write() as session:
            row = await service.claim(
                session, campaign_id=template, customer_id=body.customer_id, now=now()
            )
            out = _coupon(row)
    except PromoguardError as exc:
        svc.telemetry.claimed(template, body.customer_id, exc.code)
        if exc.code in REMEMBERED_REFUSALS:
            await _remember_refusal(svc, template, body.customer_id, exc.code)
        raise
    svc.telemetry.claimed(template, body.customer_id, None)
    return out


REMEMBERED_REFUSALS = frozenset({"coupon_sold_out", "coupon_not_claimable"})
"""Refusals kept in the audit log (``coupon.claim_refused``): when an incident turns out to have
caused them (a quantity keyed too low, a template paused by mistake), remediation re-issues the
coupon to each customer refused. A customer's own limit and rate limits are not kept."""


async def _remember_refusal(svc: Services, template: str, customer_id: str, code: str) -> None:
    try:
        async with svc.db.write() as session:
            audit.record(
                session,
                actor=customer_id,
                action="coupon.claim_refused",
                subject_type="coupon_claim",  # not "campaign": a rush would flood its timeline
                subject_id=template,
                detail={"customer_id": customer_id, "code": code},
            )
    except Exception:  # the refusal stands even if it cannot be remembered
        log.warning("could not record a refused coupon claim", exc_info=True)


@router.get(
    "/v1/customers/{customer_id}/coupons",
    summary="A customer's wallet",
    dependencies=[allow(Role.STOREFRONT, Role.OPERATOR, Role.AUDITOR, route="wallet")],
)
async def wallet(customer_id: Id, svc: Svc, state: CouponState | None = None) -> list[CouponOut]:
    async with svc.db.read() as session:
        rows = await service.wallet(session, customer_id=customer_id, state=state)
        return [_coupon(r) for r in rows]
