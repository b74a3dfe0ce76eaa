"""``/v1/claims``: customers' own claims. The shop submits one on the customer's behalf and shows
its status; operators work the review queue and decide; approved claims are paid through the
payer (see ``docs/claims.md``)."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import select

from promoguard.api import PROBLEMS, Actor, Svc, allow, now
from promoguard.claims import service
from promoguard.claims.models import Claim, ClaimReason, ClaimStatus
from promoguard.errors import ConflictError
from promoguard.notify.service import Notifications
from promoguard.payments.client import HttpPaymentProvider
from promoguard.payments.payer import PayPolicy
from promoguard.promotions.engine import PricingPolicy
from promoguard.remediation.policy import RemediationPolicy
from promoguard.security.keys import Role
from promoguard.settings import Settings
from promoguard.store.db import Database

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/claims", tags=["claims"], responses=PROBLEMS)

_STAFF = (Role.OPERATOR, Role.APPROVER, Role.AUDITOR)
ClaimId = Annotated[str, Path(pattern=r"^cl_[0-9a-f]{16}$", description="the claim's public id")]
_MONEY = 10**15


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _whole_number(value: Any) -> Any:
    # JSON true/false would pass as 1/0, and "12" as 12: amounts are integers, nothing else.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number of minor units")
    return value


MinorUnits = Annotated[
    int, Field(ge=1, le=_MONEY, description="minor units"), BeforeValidator(_whole_number)
]
Text = Annotated[str, Field(max_length=2000)]


class EvidenceIn(_In):
    """One piece of evidence: a link to a photo or screenshot, or a note."""

    kind: Literal["photo", "screenshot", "receipt", "link", "note"]
    url: str | None = Field(
        default=None, max_length=2000, pattern=r"^https?://[!-~]+$", description="http(s) URL"
    )
    text: str | None = Field(default=None, max_length=2000)


class ClaimIn(_In):
    """A customer's claim, sent by the shop on their behalf."""

    order_id: str = Field(min_length=1, max_length=36)
    customer_id: str = Field(min_length=1, max_length=128)
    reason: ClaimReason
    message: Text = ""
    evidence: list[EvidenceIn] = Field(default_factory=list, max_length=service.MAX_EVIDENCE)
    locale: Literal["zh", "en"] = "zh"
    email: str | None = Field(
        default=None, max_length=254, pattern=r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+$"
    )
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 -]{5,31}$")


class DecisionIn(_In):
    """A reviewer's decision on a claim in review."""

    decision: Literal["approve", "reject"]
    reason: str = Field(min_length=1, max_length=1000, description="shown to the customer")
    note: Text = Field(default="", description="for the team only")
    amount: MinorUnits | None = Field(
        default=None, description="a goodwill refund, only when no incident owes the order"
    )


class StepOut(BaseModel):
    """One step of a claim's history, as the customer sees it."""

    status: str
    at: datetime


class ClaimStatusOut(BaseModel):
    """A claim as the customer sees it: no internal notes, no reviewer names."""

    id: str
    order_id: str
    status: str
    reason: str
    outcome: str | None = Field(description="a stable code for the decision")
    explanation: str
    amount: int
    currency: str
    coupon_value: int
    merged_into: str | None
    due_at: datetime
    created_at: datetime
    updated_at: datetime
    history: list[StepOut]


class ClaimOut(BaseModel):
    """A claim as the team sees it."""

    id: str
    order_id: str
    customer_id: str
    reason: str
    message: str
    evidence: list[dict[str, Any]]
    locale: str
    email: str | None
    phone: str | None
    status: str
    incident_id: int | None
    klass: str | None
    action: str | None
    cause: str | None
    currency: str
    amount: int
    coupon: dict[str, Any] | None
    coupon_id: str | None
    payout_id: int | None
    decision_code: str | None
    decision_reason: str
    decided_by: str | None
    due_at: datetime
    overdue: bool
    created_at: datetime
    updated_at: datetime
    merged_into: str | None


class EventOut(BaseModel):
    """One step of a claim's history, as the team sees it."""

    at: datetime
    actor: str
    kind: str
    status: str
    message: str
    detail: dict[str, Any]
    internal: bool


def _full(claim: Claim, at: datetime) -> ClaimOut:
    columns = {c.key: getattr(claim, c.key) for c in Claim.__table__.columns if c.key != "open_key"}
    late = claim.status in service.UNDECIDED and claim.due_at < at
    return ClaimOut.model_validate({**columns, "overdue": late})


async def _status(session: Any, claim: Claim) -> ClaimStatusOut:
    steps = [
        StepOut(status=e.status, at=e.at)
        for e in await service.events(session, claim.id)
        if not e.internal and e.kind == e.status
    ]
    return ClaimStatusOut(
        id=claim.id,
        order_id=claim.order_id,
        status=claim.status,
        reason=claim.reason,
        outcome=claim.decision_code,
        explanation=claim.decision_reason,
        amount=claim.amount,
        currency=claim.currency,
        coupon_value=int((claim.coupon or {}).get("value", 0)),
        merged_into=claim.merged_into,
        due_at=claim.due_at,
        created_at=claim.created_at,
        updated_at=claim.updated_at,
        history=steps,
    )


def _policy(settings: Settings) -> service.ClaimPolicy:
    return service.ClaimPolicy(
        remediation=RemediationPolicy.model_validate(settings.remediation_policy),
        pricing=PricingPolicy(max_discount_ratio=Decimal(settings.max_discount_ratio)),
    )


def _notifications(request: Request) -> Notifications | None:
    found: Notifications | None = getattr(request.app.state, "notifications", None)
    return found


async def pay_in_background(
    settings: Settings, db: Database, claim_id: str, notifications: Notifications | None
) -> None:
    """Pay an approved claim now (one round: retries are left to ``POST …/pay``)."""
    if not settings.payment_provider_url:
        log.warning("claim %s approved: no payment provider configured to pay it", claim_id)
        return
    try:
        await _pay_once(
            settings, settings.payment_provider_url, db, claim_id, notifications=notifications
        )
    except Exception:  # the claim stays approved; paying it again is safe
        log.exception("paying claim %s failed", claim_id)
    if notifications is not None:
        notifications.dispatcher.wake()


def _pay_later(tasks: BackgroundTasks, svc: Svc, request: Request, claim: Claim) -> None:
    if claim.status == ClaimStatus.APPROVED and claim.payout_id is not None:
        tasks.add_task(pay_in_background, svc.settings, svc.db, claim.id, _notifications(request))


@router.post(
    "",
    status_code=201,
    summary="Submit a customer's claim (verified, and decided when the records can)",
    responses={200: {"description": "merged into the customer's open claim for the order"}},
    dependencies=[allow(Role.STOREFRONT, route="claim_submit")],
)
async def submit(
    *,
    body: ClaimIn,
    svc: Svc,
    actor: Actor,
    request: Request,
    response: Response,
    tasks: BackgroundTasks,
) -> ClaimStatusOut:
    await svc.guard.limits.hit("claim_submit", {"customer": body.customer_id})
    claim_request = service.ClaimRequest(
        order_id=body.order_id,
        customer_id=body.customer_id,
        reason=body.reason,
        message=body.message,
        evidence=[e.model_dump(exclude_none=True) for e in body.evidence],
        locale=body.locale,
        email=body.email,
        phone=body.phone,
    )
    async with svc.db.write() as session:
        done = await service.submit(
            session,
            claim_request,
            actor=actor,
            now=now(),
            policy=_policy(svc.settings),
            notifications=_notifications(request),
        )
        out = await _status(session, done.claim)
    if done.merged:
        response.status_code = 200
    _pay_later(tasks, svc, request, done.claim)
    return out


@router.get(
    "",
    summary="Claims for the team: the review queue (status=needs_review), the overdue ones",
    dependencies=[allow(*_STAFF, route="claims_read")],
)
async def claims(
    svc: Svc,
    status: Annotated[ClaimStatus | None, Query()] = None,
    overdue: Annotated[bool, Query(description="only undecided claims past due")] = False,
    order_id: Annotated[str | None, Query(min_length=1, max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ClaimOut]:
    at = now()
    query = select(Claim).order_by(Claim.due_at, Claim.id).limit(limit)
    if status is not None:
        query = query.where(Claim.status == status.value)
    if order_id is not None:
        query = query.where(Claim.order_id == order_id)
    if overdue:
        query = query.where(
            Claim.status.in_([s.value for s in service.UNDECIDED]), Claim.due_at < at
        )
    async with svc.db.read() as session:
        rows = await session.scalars(query)
        return [_full(c, at) for c in rows.all()]


@router.get(
    "/{claim_id}",
    summary="A claim's status, for the customer (no internal notes)",
    dependencies=[allow(Role.STOREFRONT, *_STAFF, route="claim_status")],
)
async def claim_status(claim_id: ClaimId, svc: Svc) -> ClaimStatusOut:
    async with svc.db.read() as session:
        return await _status(session, await service.get(session, claim_id))


@router.get(
    "/{claim_id}/events",
    summary="A claim's whole history, with who did what and the team's notes",
    dependencies=[allow(*_STAFF, route="claims_read")],
)
async def claim_events(claim_id: ClaimId, svc: Svc) -> list[EventOut]:
    async with svc.db.read() as session:
        await service.get(session, claim_id)
        return [
            EventOut.model_validate(e, from_attributes=True)
            for e in await service.events(session, claim_id)
        ]


@router.post(
    "/{claim_id}/decision",
    summary="Approve or reject a claim in review, with a reason for the customer",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, route="claim_decide")],
)
async def decide(
    *,
    claim_id: ClaimId,
    body: DecisionIn,
    svc: Svc,
    actor: Actor,
    request: Request,
    tasks: BackgroundTasks,
) -> ClaimOut:
    async with svc.db.write() as session:
        claim = await service.get(session, claim_id, lock=True)
        await service.decide(
            session,
            claim,
            approve=body.decision == "approve",
            reason=body.reason,
            note=body.note,
            amount=body.amount,
            actor=actor,
            now=now(),
            policy=_policy(svc.settings),
            notifications=_notifications(request),
        )
        out = _full(claim, now())
    _pay_later(tasks, svc, request, claim)
    return out


@router.post(
    "/{claim_id}/pay",
    summary="Pay an approved claim now (again after a failure; or settle one a plan paid)",
    dependencies=[allow(Role.OPERATOR, route="claim_pay")],
)
async def pay(claim_id: ClaimId, svc: Svc, actor: Actor, request: Request) -> ClaimOut:
    claim = await pay_now(
        svc.settings, svc.db, claim_id, notifications=_notifications(request), actor=actor
    )
    return _full(claim, now())


async def pay_now(
    settings: Settings,
    db: Database,
    claim_id: str,
    *,
    notifications: Notifications | None,
    actor: str,
) -> Claim:
    """Pay an approved claim now, as ``actor`` asked (``POST …/pay``, the dashboard's "pay
    again"): one round through the payment provider, then settled if the payout succeeded."""
    async with db.read() as session:
        await service.get(session, claim_id)
    if not settings.payment_provider_url:
        raise ConflictError("payments_not_configured", "PROMOGUARD_PAYMENT_PROVIDER_URL is not set")
    return await _pay_once(
        settings,
        settings.payment_provider_url,
        db,
        claim_id,
        notifications=notifications,
        actor=actor,
    )


async def _pay_once(
    settings: Settings,
    provider_url: str,
    db: Database,
    claim_id: str,
    *,
    notifications: Notifications | None,
    actor: str | None = None,
) -> Claim:
    """One round of paying an approved claim through the provider at ``provider_url``, settled
    if the payout succeeded; audited when someone (``actor``) asked for it."""
    provider = HttpPaymentProvider(provider_url, timeout=settings.payment_timeout_seconds)
    try:
        return await service.pay_claim(
            db,
            provider,
            claim_id,
            notifications=notifications,
            policy=PayPolicy.from_settings(settings),
            wait=False,
            actor=actor,
        )
    finally:
        await provider.aclose()
