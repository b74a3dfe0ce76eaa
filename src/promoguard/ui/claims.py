"""The claims queue for the team: claims in review first, each with its history and payout, the
approve / reject form (a reason the customer sees, a note for the team, a goodwill amount) and,
for an approved claim not paid yet (its payout failed, say), "pay again"."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import case, select
from starlette.background import BackgroundTask

from promoguard.claims import service as claims
from promoguard.claims.models import Claim, ClaimStatus
from promoguard.claims.routes import pay_in_background, pay_now
from promoguard.errors import InvalidError, PromoguardError
from promoguard.notify.service import Notifications
from promoguard.payments.models import Payout
from promoguard.promotions.engine import PricingPolicy
from promoguard.remediation.policy import RemediationPolicy
from promoguard.security.keys import Role
from promoguard.settings import Settings
from promoguard.ui.common import (
    Operator,
    act,
    html_route,
    page,
    parse_amount,
    refusal,
    render,
    services,
)

router = APIRouter()


def claim_policy(settings: Settings) -> claims.ClaimPolicy:
    """The claims policy the API uses, from the settings."""
    return claims.ClaimPolicy(
        remediation=RemediationPolicy.model_validate(settings.remediation_policy),
        pricing=PricingPolicy(max_discount_ratio=Decimal(settings.max_discount_ratio)),
    )


def notifications(request: Request) -> Notifications | None:
    """Where customer notices are queued (as the API queues them)."""
    found: Notifications | None = getattr(request.app.state, "notifications", None)
    return found


def payment_task(request: Request, claim: Claim) -> BackgroundTask | None:
    """Pay an approved claim after the answer, as the API does."""
    if claim.status != ClaimStatus.APPROVED or claim.payout_id is None:
        return None
    svc = services(request)
    return BackgroundTask(pay_in_background, svc.settings, svc.db, claim.id, notifications(request))


@html_route(router, "/ui/claims")
async def queue(request: Request) -> Response:
    """Claims by urgency: in review first, then by deadline."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    review_first = case((Claim.status == ClaimStatus.NEEDS_REVIEW.value, 0), else_=1)
    async with services(request).db.read() as session:
        rows = await session.scalars(
            select(Claim).order_by(review_first, Claim.due_at, Claim.id).limit(300)
        )
        found = list(rows.all())
    return render(request, "claims.html.j2", claims=found)


@html_route(router, "/ui/claims/{claim_id}")
async def claim_page(request: Request, claim_id: str) -> Response:
    """One claim, its whole history and, in review, the decision form."""
    op = await page(request)
    if not isinstance(op, Operator):
        return op
    try:
        async with services(request).db.read() as session:
            found = await claims.get(session, claim_id)
            history = await claims.events(session, claim_id)
            payout = (
                await session.get(Payout, found.payout_id) if found.payout_id is not None else None
            )
    except PromoguardError as exc:
        return refusal(request, exc.status, "Not found", exc.detail)
    return render(
        request,
        "claim.html.j2",
        claim=found,
        history=history,
        payout=payout,
        may_decide=found.status == ClaimStatus.NEEDS_REVIEW
        and op.may(Role.OPERATOR, Role.APPROVER),
        may_pay=found.status == ClaimStatus.APPROVED and op.may(Role.OPERATOR),
    )


@html_route(router, "/ui/claims/{claim_id}/decision", "POST")
async def decide(request: Request, claim_id: str) -> Response:
    """Approve or reject a claim in review; an approved claim is paid after the answer."""
    svc = services(request)

    async def work(op: Operator, fields: dict[str, str]) -> tuple[str, BackgroundTask | None]:
        approve = fields.get("decision") == "approve"
        reason = fields.get("reason", "")[:1000]
        if not reason:
            raise InvalidError("reason_required", "give the customer a reason")
        try:
            amount = parse_amount(fields.get("amount", ""))
        except ValueError as exc:
            raise InvalidError("claim_amount_invalid", str(exc)) from None
        async with svc.db.write() as session:
            found = await claims.get(session, claim_id, lock=True)
            await claims.decide(
                session,
                found,
                approve=approve,
                reason=reason,
                note=fields.get("note", "")[:2000],
                amount=amount,
                actor=op.key_id,
                now=datetime.now(UTC),
                policy=claim_policy(svc.settings),
                notifications=notifications(request),
            )
            status = found.status
        return f"Claim {claim_id} is {status} now.", payment_task(request, found)

    return await act(request, (Role.OPERATOR, Role.APPROVER), f"/ui/claims/{claim_id}", work)


@html_route(router, "/ui/claims/{claim_id}/pay", "POST")
async def pay(request: Request, claim_id: str) -> Response:
    """Pay an approved claim again (after its payout failed), as ``POST /v1/claims/{id}/pay``."""
    svc = services(request)

    async def work(op: Operator, _: dict[str, str]) -> str:
        found = await pay_now(
            svc.settings, svc.db, claim_id, notifications=notifications(request), actor=op.key_id
        )
        if found.status == ClaimStatus.PAID:
            return f"Claim {claim_id} is paid."
        return f"Claim {claim_id} is {found.status}: the payout did not succeed this time."

    return await act(request, (Role.OPERATOR,), f"/ui/claims/{claim_id}", work)
