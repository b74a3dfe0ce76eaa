"""Customers' own claims: submitted, verified against the order and the incidents, decided,
paid (see ``docs/claims.md``).

**Verifying** (:func:`assess`): the order must exist and belong to the customer. Every incident
whose window covers the order's creation is asked, in id order, whether the order is one of its
affected orders — by :func:`~promoguard.remediation.affected.find_affected` itself, over that
one instant — and if so the order is re-priced and classified by
:func:`~promoguard.remediation.plan.item_for` under the incident's severity policy: the same
cause (``incident:<id>:<class>``) and the same amount a remediation plan gives it. When a plan of
the incident already has an item for the order, that item *is* the answer (its amount, and its
payout if it has one).

**Deciding**: a match that owes money or a coupon is approved on the spot; an order no incident
affected, or one an incident affected without anything owed, is rejected with the reason; claims
the records cannot settle (reason ``oversold`` or ``other``, or a policy that cancels the order)
wait for a person (``needs_review``), who approves or rejects them with a reason.

**Paying**: the payout's idempotency key is ``payout_key(order, cause)``, the key of the plan item
for the same order, so a claim and a plan pay once between them
(:func:`~promoguard.payments.payer.plan_payouts` keeps a payout planned before). A payout already
made for the order is referenced, not repeated. A claim approved by a person with no incident
behind it pays under its own cause ``claim:<id>``. A claim is ``paid`` when its payout succeeded
(or at once, when only a coupon was owed).

Every function works in the caller's session (one transaction) and takes the time as ``now``;
every change adds a :class:`~promoguard.claims.models.ClaimEvent` and queues the customer's
notice in the same transaction.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard import audit
from promoguard.claims.models import Claim, ClaimEvent, ClaimReason, ClaimStatus
from promoguard.claims.notices import notice_for
from promoguard.coupons import service as coupons
from promoguard.coupons.models import IssuedCoupon
from promoguard.errors import ConflictError, InvalidError, NotFoundError
from promoguard.incidents.models import Incident
from promoguard.incidents.service import versions_of
from promoguard.notify.service import Notifications
from promoguard.orders.models import Order
from promoguard.payments.models import Payout, PayoutStatus, payout_key
from promoguard.payments.payer import NewPayout, Payer, PayPolicy, plan_payouts
from promoguard.payments.provider import PaymentProvider
from promoguard.plans.models import PlanStatus, RemediationItem, RemediationPlan
from promoguard.plans.service import COUPON_NAMESPACE
from promoguard.promotions.engine import PricingPolicy
from promoguard.remediation.affected import find_affected
from promoguard.remediation.corrected import load_corrected
from promoguard.remediation.plan import item_for
from promoguard.remediation.policy import RemediationPolicy
from promoguard.remediation.snapshot import load_snapshot
from promoguard.store.db import Database, upsert_insert, utcnow

__all__ = [
    "DEFAULT_RESPONSE_HOURS",
    "MAX_EVIDENCE",
    "OPEN",
    "UNDECIDED",
    "Assessment",
    "ClaimPolicy",
    "ClaimRequest",
    "Submitted",
    "assess",
    "decide",
    "events",
    "get",
    "new_claim_id",
    "overdue",
    "pay_claim",
    "settle",
    "submit",
]

OPEN = (
    ClaimStatus.SUBMITTED,
    ClaimStatus.VERIFIED,
    ClaimStatus.APPROVED,
    ClaimStatus.NEEDS_REVIEW,
)
"""States in which a claim is open: a second claim for its order and customer merges into it."""
UNDECIDED = (ClaimStatus.SUBMITTED, ClaimStatus.VERIFIED, ClaimStatus.NEEDS_REVIEW)
"""States in which a claim still waits for a decision (and can be overdue)."""
REVIEWED_REASONS = frozenset({ClaimReason.OVERSOLD, ClaimReason.OTHER})
"""Reasons the store's records cannot confirm: a person decides."""
MAX_EVIDENCE = 10
"""Evidence items kept per claim (a merged duplicate's are added up to this)."""
DEFAULT_RESPONSE_HOURS: Mapping[str, int] = MappingProxyType(
    {"P0": 12, "P1": 24, "P2": 48, "P3": 48}
)
"""Hours to decide a claim, by the severity of the incident it matched (48 without one)."""
_PAYABLE = frozenset({"refund_difference", "full_refund_with_coupon"})
_NOTHING_OWED = frozenset({"none", "honour"})
_SYSTEM = "promoguard"


@dataclass(frozen=True, slots=True)
class ClaimPolicy:
    """How claims are verified and how soon they must be decided.

    Args:
        remediation: the shop's remediation policy (the plans' one: same amounts).
        pricing: the shop-wide guard the service prices with.
        default_hours: the response deadline of a claim no incident matched.
        hours_by_severity: the deadline of a claim matched to an incident of that severity.
    """

    remediation: RemediationPolicy = field(default_factory=RemediationPolicy)
    pricing: PricingPolicy = field(default_factory=PricingPolicy)
    default_hours: int = 48
    hours_by_severity: Mapping[str, int] = field(default_factory=lambda: DEFAULT_RESPONSE_HOURS)

    def due(self, start: datetime, severity: str | None = None) -> datetime:
        """The response deadline of a claim made at ``start``."""
        hours = self.hours_by_severity.get(severity or "", self.default_hours)
        return start + timedelta(hours=hours)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What the shop sends on the customer's behalf."""

    order_id: str
    customer_id: str
    reason: ClaimReason
    message: str = ""
    evidence: Sequence[Mapping[str, Any]] = ()
    locale: str = "zh"
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class Submitted:
    """The claim a submission produced, or the open claim it was merged into."""

    claim: Claim
    merged: bool


@dataclass(frozen=True, slots=True)
class Assessment:
    """What one incident owes one order: a plan item's facts, planned or stored."""

    incident_id: int
    severity: str
    klass: str
    action: str
    cause: str
    currency: str
    refund: int
    coupon: dict[str, Any] | None
    reason: str
    payout_id: int | None = None
    """The payout a plan already made for the item."""
    coupon_id: str | None = None
    """The coupon a plan already gave for the item."""

    @property
    def owes(self) -> bool:
        """Whether the customer is owed money or a coupon."""
        return self.action in _PAYABLE and (self.refund > 0 or self.coupon is not None)


def new_claim_id() -> str:
    """A fresh public claim id: ``cl_`` and 16 random hex digits."""
    return f"cl_{secrets.token_hex(8)}"


async def get(session: AsyncSession, claim_id: str, *, lock: bool = False) -> Claim:
    """The claim, read fresh (locked for the transaction when ``lock``), or 404."""
    claim = await session.get(Claim, claim_id, with_for_update=lock, populate_existing=lock)
    if claim is None:
        raise NotFoundError("claim_not_found", f"there is no claim {claim_id}")
    return claim


async def events(session: AsyncSession, claim_id: str) -> list[ClaimEvent]:
    """A claim's history, oldest first."""
    rows = await session.scalars(
        select(ClaimEvent).where(ClaimEvent.claim_id == claim_id).order_by(ClaimEvent.id)
    )
    return list(rows.all())


def _event(
    session: AsyncSession,
    claim: Claim,
    *,
    actor: str,
    kind: str,
    message: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
    internal: bool = False,
) -> None:
    session.add(
        ClaimEvent(
            claim_id=claim.id,
            at=now,
            actor=actor,
            kind=kind,
            status=claim.status,
            message=message[:2000],
            detail=dict(detail or {}),
            internal=internal,
        )
    )


def _move(
    session: AsyncSession,
    claim: Claim,
    status: ClaimStatus,
    *,
    actor: str,
    message: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> None:
    claim.status = status.value
    if status not in OPEN:
        claim.open_key = None
    claim.updated_at = now
    _event(session, claim, actor=actor, kind=status.value, message=message, now=now, detail=detail)


async def _notify(
    session: AsyncSession, notifications: Notifications | None, claim: Claim, change: str
) -> None:
    if notifications is not None:
        await notifications.queue(session, notice_for(claim, change))


# -- verifying ---------------------------------------------------------------------------------


async def _plan_item(
    session: AsyncSession, incident: Incident, order_id: str
) -> RemediationItem | None:
    """The item a (not rejected) plan of ``incident`` has for the order, the newest plan's."""
    found: RemediationItem | None = await session.scalar(
        select(RemediationItem)
        .join(RemediationPlan, RemediationPlan.id == RemediationItem.plan_id)
        .where(
            RemediationPlan.incident_id == incident.id,
            RemediationPlan.status != PlanStatus.REJECTED.value,
            RemediationItem.order_id == order_id,
        )
        .order_by(RemediationPlan.id.desc())
        .limit(1)
    )
    return found


def _coupon_of(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not data:
        return None
    return {k: data[k] for k in ("value", "min_spend", "valid_days")}


async def _assess_one(
    session: AsyncSession,
    incident: Incident,
    order: Order,
    policy: ClaimPolicy,
    *,
    oversold: bool,
) -> Assessment | None:
    stored = await _plan_item(session, incident, order.id)
    if stored is not None:
        return Assessment(
            incident_id=incident.id,
            severity=incident.severity,
            klass=stored.klass,
            action=stored.action,
            cause=stored.cause,
            currency=stored.currency or order.currency,
            refund=stored.refund,
            coupon=_coupon_of(stored.coupon),
            reason=stored.reason,
            payout_id=stored.payout_id,
            coupon_id=stored.coupon_id,
        )
    faulty = versions_of(incident)
    rules = await load_corrected(session, faulty, pricing=policy.pricing)
    # The plan's own search, over the one instant the order was created at.
    affected = await find_affected(
        session,
        versions=faulty,
        start=order.created_at,
        end=order.created_at,
        history=rules.history,
    )
    hit = next((a for a in affected if a.order_id == order.id), None)
    if hit is None:
        return None
    snapshot = await load_snapshot(session, order.id)
    if snapshot is None:
        return None
    item = item_for(
        snapshot,
        rules,
        policy.remediation.for_severity(incident.severity),
        incident_id=incident.id,
        oversold=oversold,
        degraded=hit.degraded,
    )
    return Assessment(
        incident_id=incident.id,
        severity=incident.severity,
        klass=item.klass,
        action=item.action,
        cause=item.cause,
        currency=item.currency,
        refund=item.refund,
        coupon=_coupon_of(item.as_dict()["coupon"]),
        reason=item.reason,
    )


async def assess(
    session: AsyncSession, order: Order, policy: ClaimPolicy, *, oversold: bool = False
) -> Assessment | None:
    """What the incidents covering ``order`` owe it: the first match that owes something, else
    the first match, else None (no incident affected the order)."""
    rows = await session.scalars(
        select(Incident)
        .where(
            Incident.window_start <= order.created_at,
            or_(Incident.window_end.is_(None), Incident.window_end >= order.created_at),
        )
        .order_by(Incident.id)
    )
    first: Assessment | None = None
    for incident in rows.all():
        found = await _assess_one(session, incident, order, policy, oversold=oversold)
        if found is not None and found.owes:
            return found
        first = first or found
    return first


def _record(claim: Claim, assessment: Assessment | None) -> None:
    """Write the assessment onto the claim (the cause only when something is owed, or a plan
    already paid or compensated the order)."""
    if assessment is None:
        return
    claim.incident_id = assessment.incident_id
    claim.klass = assessment.klass
    claim.action = assessment.action
    if assessment.owes or assessment.payout_id is not None or assessment.coupon_id is not None:
        claim.cause = assessment.cause
        claim.currency = assessment.currency
        claim.amount = assessment.refund
        claim.coupon = assessment.coupon


# -- granting ----------------------------------------------------------------------------------


async def _give_coupon(
    session: AsyncSession, claim: Claim, coupon: Mapping[str, Any], key: str, now: datetime
) -> str:
    """Give the compensation coupon once: its id comes from the payout key, as a plan's does,
    so a plan and a claim for the same order give one coupon between them."""
    coupon_id = str(uuid.uuid5(COUPON_NAMESPACE, key))
    if await session.get(IssuedCoupon, coupon_id) is not None:
        return coupon_id
    value, min_spend, days = coupon["value"], coupon["min_spend"], coupon["valid_days"]
    spec = {
        "id": f"comp-{claim.id}",
        "kind": "coupon",
        "name": f"补偿券 compensation (claim {claim.id})",
        "scope": {"all_items": True},
        "benefit": "threshold" if min_spend else "no_threshold",
        "min_spend": min_spend,
        "discount": value,
        "per_user_limit": 1,
        "quantity": 1,
        "valid_from": now.isoformat(),
        "valid_until": (now + timedelta(days=days)).isoformat(),
    }
    # The claim's approval is this campaign's review; its one coupon is given here.
    await coupons.grant(
        session,
        campaign_id=spec["id"],
        spec=spec,
        holders=[(coupon_id, claim.customer_id)],
        actor=f"claim:{claim.id}",
        reason=f"compensation coupon of claim {claim.id}",
        now=now,
    )
    return coupon_id


async def _grant(
    session: AsyncSession,
    claim: Claim,
    *,
    payout_id: int | None,
    coupon_id: str | None,
    actor: str,
    now: datetime,
) -> None:
    """Plan the claim's payout (or take the existing one) and give its coupon; ``paid`` at once
    when the payout succeeded already or no money is owed."""
    cause = claim.cause or ""
    key = payout_key(claim.order_id, cause)
    if claim.amount > 0 and claim.payout_id is None:
        if payout_id is None:
            ids = await plan_payouts(
                session,
                items=[
                    NewPayout(
                        order_id=claim.order_id,
                        customer_id=claim.customer_id,
                        cause=cause,
                        amount=claim.amount,
                        currency=claim.currency,
                    )
                ],
                now=now,
            )
            payout_id = ids[key]
        claim.payout_id = payout_id
    if claim.coupon is not None and claim.coupon_id is None:
        claim.coupon_id = coupon_id or await _give_coupon(session, claim, claim.coupon, key, now)
    await _settle_payout(session, claim, actor=actor, now=now)


async def _settle_payout(session: AsyncSession, claim: Claim, *, actor: str, now: datetime) -> bool:
    """Move an approved claim to ``paid`` once nothing is left to pay; whether it moved."""
    if claim.status != ClaimStatus.APPROVED:
        return False
    if claim.payout_id is not None:
        payout = await session.get(Payout, claim.payout_id, populate_existing=True)
        if payout is None or payout.status != PayoutStatus.SUCCEEDED:
            return False
        message = f"refunded {claim.amount} {claim.currency}" + (
            " and a compensation coupon given" if claim.coupon_id else ""
        )
        detail: dict[str, Any] = {
            "payout_id": payout.id,
            "provider_refund_id": payout.provider_refund_id,
            "idempotency_key": payout.idempotency_key,
        }
    else:
        message, detail = "a compensation coupon given", {"coupon_id": claim.coupon_id}
    _move(session, claim, ClaimStatus.PAID, actor=actor, message=message, now=now, detail=detail)
    return True


# -- submitting --------------------------------------------------------------------------------


async def _merge(
    session: AsyncSession,
    request: ClaimRequest,
    open_key: str,
    *,
    actor: str,
    now: datetime,
    notifications: Notifications | None,
) -> Submitted | None:
    """Fold ``request`` into the open claim of its order and customer (None: none is open)."""
    found = await session.scalar(select(Claim).where(Claim.open_key == open_key).with_for_update())
    if found is None:
        return None
    duplicate = Claim(
        id=new_claim_id(),
        order_id=request.order_id,
        customer_id=request.customer_id,
        reason=request.reason.value,
        message=request.message,
        evidence=[dict(e) for e in request.evidence],
        locale=request.locale,
        email=request.email,
        phone=request.phone,
        status=ClaimStatus.MERGED.value,
        currency=found.currency,
        amount=0,
        decision_code="merged",
        decision_reason=f"merged into the open claim {found.id}",
        due_at=found.due_at,
        created_at=now,
        updated_at=now,
        merged_into=found.id,
    )
    session.add(duplicate)
    await session.flush()
    _event(
        session,
        duplicate,
        actor=actor,
        kind="merged",
        message=f"a duplicate of the open claim {found.id}",
        now=now,
        detail={"merged_into": found.id},
    )
    found.evidence = [*found.evidence, *duplicate.evidence][:MAX_EVIDENCE]
    found.updated_at = now
    _event(
        session,
        found,
        actor=actor,
        kind="merged",
        message="the customer applied again for this order: merged into this claim",
        now=now,
        detail={"duplicate": duplicate.id, "message": request.message[:500]},
    )
    await _notify(session, notifications, found, f"merged:{duplicate.id}")
    return Submitted(found, merged=True)


def _open_key(order: Order) -> str:
    return f"{order.id}:{order.customer_id}"


async def _insert(
    session: AsyncSession, request: ClaimRequest, order: Order, *, due_at: datetime, now: datetime
) -> str | None:
    """Insert the claim unless one is open for the order and customer; its id, or None."""
    claim_id = new_claim_id()
    inserted = await session.execute(
        upsert_insert(session)(Claim)
        .values(
            id=claim_id,
            order_id=request.order_id,
            customer_id=request.customer_id,
            reason=request.reason.value,
            message=request.message,
            evidence=[dict(e) for e in request.evidence][:MAX_EVIDENCE],
            locale=request.locale,
            email=request.email,
            phone=request.phone,
            status=ClaimStatus.SUBMITTED.value,
            open_key=_open_key(order),
            currency=order.currency,
            amount=0,
            decision_reason="",
            due_at=due_at,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["open_key"])
        .returning(Claim.id)
    )
    found: str | None = inserted.scalar_one_or_none()
    return found


async def submit(
    session: AsyncSession,
    request: ClaimRequest,
    *,
    actor: str,
    now: datetime,
    policy: ClaimPolicy | None = None,
    notifications: Notifications | None = None,
) -> Submitted:
    """Take a customer's claim: verify it, decide what the records can decide, pay what is owed.

    Args:
        session: a write session: the claim, its history, its payout and its notice land
            together.
        request: the claim as the shop sent it.
        actor: the key submitting it (the shop).
        now: the time.
        policy: amounts and deadlines (default: the built-in policy).
        notifications: where the customer's notice is queued (None: no notice).

    Returns:
        The new claim, or the open claim it was merged into (``merged``).

    Raises:
        NotFoundError: ``claim_order_not_found``: the customer has no such order.
    """
    policy = policy or ClaimPolicy()
    order = await session.get(Order, request.order_id)
    if order is None or order.customer_id != request.customer_id:
        raise NotFoundError(
            "claim_order_not_found",
            f"customer {request.customer_id!r} has no order {request.order_id!r}",
        )
    open_key = _open_key(order)
    claim_id = None
    for _ in range(2):  # an open claim may close between the insert and the merge: once more
        claim_id = await _insert(session, request, order, due_at=policy.due(now), now=now)
        if claim_id is not None:
            break
        merged = await _merge(
            session, request, open_key, actor=actor, now=now, notifications=notifications
        )
        if merged is not None:
            return merged
    if claim_id is None:
        raise ConflictError("claim_busy", "another claim for this order is changing: try again")
    claim = await get(session, claim_id)
    _event(session, claim, actor=actor, kind="submitted", message=request.message, now=now)
    _move(
        session,
        claim,
        ClaimStatus.VERIFIED,
        actor=_SYSTEM,
        message=f"order {order.id} of customer {order.customer_id} found ({order.status})",
        now=now,
    )
    assessment = await assess(
        session, order, policy, oversold=request.reason == ClaimReason.OVERSOLD
    )
    if assessment is not None:
        claim.due_at = min(claim.due_at, policy.due(now, assessment.severity))
    await _decide_automatically(session, claim, request, assessment, now=now)
    await _notify(session, notifications, claim, claim.status)
    return Submitted(claim, merged=False)


async def _decide_automatically(
    session: AsyncSession,
    claim: Claim,
    request: ClaimRequest,
    assessment: Assessment | None,
    *,
    now: datetime,
) -> None:
    _record(claim, assessment)
    detail = {} if assessment is None else {"incident_id": assessment.incident_id}
    if request.reason in REVIEWED_REASONS:
        why = (
            "the shop confirms an oversold order"
            if request.reason == ClaimReason.OVERSOLD
            else "a person reads claims of this kind"
        )
        _conclude(claim, "review_required", why)
        _move(session, claim, ClaimStatus.NEEDS_REVIEW, actor=_SYSTEM, message=why, now=now)
        return
    if assessment is None:
        why = (
            f"order {claim.order_id} was not affected by any known pricing incident: it was "
            "charged the price the promotions live at the time gave it"
        )
        _conclude(claim, "not_affected", why)
        _move(session, claim, ClaimStatus.REJECTED, actor=_SYSTEM, message=why, now=now)
        return
    # A plan that already refunded or compensated this order has decided it: the claim follows.
    done_by_plan = assessment.payout_id is not None or assessment.coupon_id is not None
    if assessment.action in _NOTHING_OWED or not (assessment.owes or done_by_plan):
        why = f"checked against incident {assessment.incident_id}: {assessment.reason}"
        _conclude(claim, "nothing_owed", why)
        _move(
            session, claim, ClaimStatus.REJECTED, actor=_SYSTEM, message=why, now=now, detail=detail
        )
        return
    if assessment.action not in _PAYABLE and not done_by_plan:  # a cancellation: a person looks
        why = f"incident {assessment.incident_id}: {assessment.reason}"
        _conclude(claim, "review_required", why)
        _move(
            session,
            claim,
            ClaimStatus.NEEDS_REVIEW,
            actor=_SYSTEM,
            message=why,
            now=now,
            detail=detail,
        )
        return
    why = f"affected by incident {assessment.incident_id} ({assessment.klass}): {assessment.reason}"
    _conclude(claim, "matched_incident", why)
    claim.decided_by = _SYSTEM
    _move(
        session,
        claim,
        ClaimStatus.APPROVED,
        actor=_SYSTEM,
        message=why,
        now=now,
        detail={**detail, "cause": assessment.cause, "amount": assessment.refund},
    )
    await _grant(
        session,
        claim,
        payout_id=assessment.payout_id,
        coupon_id=assessment.coupon_id,
        actor=_SYSTEM,
        now=now,
    )


def _conclude(claim: Claim, code: str, reason: str) -> None:
    claim.decision_code = code
    claim.decision_reason = reason[:1000]


# -- deciding ----------------------------------------------------------------------------------


async def decide(
    session: AsyncSession,
    claim: Claim,
    *,
    approve: bool,
    reason: str,
    actor: str,
    now: datetime,
    amount: int | None = None,
    note: str = "",
    policy: ClaimPolicy | None = None,
    notifications: Notifications | None = None,
) -> Claim:
    """A person approves or rejects a claim in review.

    The claim is assessed again first (a plan may have been made, or paid, meanwhile). When an
    incident owes the order something, approving pays exactly that and ``amount`` must be left
    out; otherwise approving needs ``amount`` (minor units, at most what the order still has
    paid), paid under the cause ``claim:<id>``.

    Raises:
        ConflictError: ``claim_not_in_review``.
        InvalidError: ``claim_amount_fixed``, ``claim_amount_required``, ``claim_amount_too_high``.
    """
    policy = policy or ClaimPolicy()
    if claim.status != ClaimStatus.NEEDS_REVIEW:
        raise ConflictError(
            "claim_not_in_review", f"claim {claim.id} is {claim.status}: only one in review"
        )
    if note:
        _event(session, claim, actor=actor, kind="note", message=note, now=now, internal=True)
    claim.decided_by = actor
    audit.record(
        session,
        actor=actor,
        action=f"claim.{'approved' if approve else 'rejected'}",
        subject_type="claim",
        subject_id=claim.id,
        detail={"reason": reason[:500], "amount": amount},
    )
    if not approve:
        _conclude(claim, "rejected_by_reviewer", reason)
        _move(session, claim, ClaimStatus.REJECTED, actor=actor, message=reason, now=now)
        await _notify(session, notifications, claim, claim.status)
        return claim
    order = await session.get(Order, claim.order_id)
    if order is None:  # orders are never deleted; a claim without one is a bug
        raise NotFoundError("claim_order_not_found", f"claim {claim.id} has no order")
    assessment = await assess(session, order, policy, oversold=claim.reason == ClaimReason.OVERSOLD)
    payout_id = coupon_id = None
    if assessment is not None and assessment.owes:
        if amount is not None and amount != assessment.refund:
            raise InvalidError(
                "claim_amount_fixed",
                f"incident {assessment.incident_id} owes this order {assessment.refund}: "
                "approve without an amount",
                errors=[("amount", "leave it out")],
            )
        _record(claim, assessment)
        payout_id, coupon_id = assessment.payout_id, assessment.coupon_id
    else:
        _manual(claim, order, amount)
    _conclude(claim, "approved_by_reviewer", reason)
    _move(
        session,
        claim,
        ClaimStatus.APPROVED,
        actor=actor,
        message=reason,
        now=now,
        detail={"cause": claim.cause, "amount": claim.amount},
    )
    await _grant(session, claim, payout_id=payout_id, coupon_id=coupon_id, actor=actor, now=now)
    await _notify(session, notifications, claim, claim.status)
    return claim


def _manual(claim: Claim, order: Order, amount: int | None) -> None:
    """A goodwill refund a reviewer grants with no incident behind it."""
    if amount is None or amount <= 0:
        raise InvalidError(
            "claim_amount_required",
            f"no incident owes order {order.id} anything: approving needs an amount",
            errors=[("amount", "a positive amount in minor units")],
        )
    left = order.total - order.refunded_total
    if amount > left:
        raise InvalidError(
            "claim_amount_too_high",
            f"order {order.id} has {left} {order.currency} left to refund",
            errors=[("amount", f"at most {left}")],
        )
    claim.cause = f"claim:{claim.id}"
    claim.currency = order.currency
    claim.amount = amount
    claim.coupon = None


# -- paying ------------------------------------------------------------------------------------


async def settle(
    session: AsyncSession,
    claim: Claim,
    *,
    now: datetime,
    notifications: Notifications | None = None,
) -> bool:
    """Move an approved claim to ``paid`` if its payout succeeded (whoever paid it)."""
    if await _settle_payout(session, claim, actor=_SYSTEM, now=now):
        await _notify(session, notifications, claim, claim.status)
        return True
    return False


async def pay_claim(
    db: Database,
    provider: PaymentProvider,
    claim_id: str,
    *,
    notifications: Notifications | None = None,
    policy: PayPolicy | None = None,
    wait: bool = True,
    actor: str | None = None,
) -> Claim:
    """Pay an approved claim's payout through the payer, then settle it (safe to repeat).
    With an ``actor`` (someone asked for it), the attempt and its outcome are audited.

    Raises:
        NotFoundError: ``claim_not_found``.
        ConflictError: ``claim_not_approved``: it is not approved (nor paid already).
    """
    async with db.read() as session:
        claim = await get(session, claim_id)
    if claim.status == ClaimStatus.PAID:
        return claim
    if claim.status != ClaimStatus.APPROVED:
        raise ConflictError(
            "claim_not_approved", f"claim {claim_id} is {claim.status}: only an approved one pays"
        )
    if claim.payout_id is not None:
        await Payer(db, provider, policy=policy).pay_all([claim.payout_id], wait=wait)
    async with db.write() as session:
        claim = await get(session, claim_id, lock=True)
        await settle(session, claim, now=utcnow(), notifications=notifications)
        if actor is not None:
            audit.record(
                session,
                actor=actor,
                action="claim.pay_requested",
                subject_type="claim",
                subject_id=claim.id,
                detail={"payout_id": claim.payout_id, "status": claim.status},
            )
        return claim


async def overdue(session: AsyncSession, *, now: datetime, limit: int = 100) -> list[Claim]:
    """Claims still undecided past their response deadline, the most overdue first."""
    rows = await session.scalars(
        select(Claim)
        .where(Claim.status.in_([s.value for s in UNDECIDED]), Claim.due_at < now)
        .order_by(Claim.due_at, Claim.id)
        .limit(limit)
    )
    return list(rows.all())
