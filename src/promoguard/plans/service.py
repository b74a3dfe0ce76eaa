"""A remediation plan's life: saved as a draft, approved by someone else, executed, settled.

* :func:`save_draft` stores a :class:`~promoguard.remediation.plan.PlanDraft` and links it to its
  incident (timeline: ``plan`` drafted).
* :func:`decide` approves or rejects it; the author may not approve their own plan (timeline:
  approved / rejected).
* :func:`prepare` (the first step of execution, and safe to run again) plans one payout per
  refund (:func:`promoguard.payments.payer.plan_payouts`, keyed ``<order>:<cause>``), gives the
  compensation coupons (a coupon campaign per coupon shape, live and with no stock left to claim,
  each coupon's id derived from the item's key, so it is given once), extends each campaign the
  policy names for the plan's customers (a personal coupon with the intended offer, valid the
  policy's days past the campaign's end), and closes the items with nothing to do; the job then
  cancels unshipped orders through checkout when the policy says so (:func:`to_cancel`).
* Payouts are paid by the payer (:mod:`promoguard.plans.jobs` runs it as a queued job).
* :func:`settle` moves each item to the state of its payout; once none is left ``planned`` the
  plan is ``done`` (timeline: payouts done, with the totals).

Every step is idempotent, so a crashed worker resumes by running the plan again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.campaigns.models import CampaignVersion
from promoguard.coupons import service as coupons
from promoguard.errors import ConflictError, ForbiddenError, NotFoundError
from promoguard.incidents import service as incidents
from promoguard.incidents.models import Incident
from promoguard.money import format_minor
from promoguard.payments.models import Payout, PayoutStatus
from promoguard.payments.payer import NewPayout, plan_payouts
from promoguard.plans.models import ItemStatus, PlanStatus, RemediationItem, RemediationPlan
from promoguard.promotions.engine import PricingPolicy
from promoguard.remediation.affected import failed_claims
from promoguard.remediation.plan import PlanDraft, build_plan
from promoguard.remediation.policy import RemediationPolicy
from promoguard.security.models import ApiKey
from promoguard.store.db import upsert_insert

__all__ = [
    "COUPON_NAMESPACE",
    "decide",
    "draft_plan",
    "extension_spec",
    "get_plan",
    "prepare",
    "progress",
    "save_draft",
    "settle",
    "to_cancel",
]

COUPON_NAMESPACE = uuid.UUID("6f1d2a4e-5b7c-4c8d-9e0f-a1b2c3d4e5f6")
"""Compensation coupon ids are ``uuid5(COUPON_NAMESPACE, item key)``: given once per item."""
_CHUNK = 1000
_MONEY_ACTIONS = {"refund_difference", "full_refund_with_coupon"}


async def get_plan(session: AsyncSession, plan_id: int, *, lock: bool = False) -> RemediationPlan:
    """The plan, read fresh (locked when ``lock``), or 404."""
    plan = await session.get(RemediationPlan, plan_id, with_for_update=lock, populate_existing=lock)
    if plan is None:
        raise NotFoundError("plan_not_found", f"there is no remediation plan {plan_id}")
    return plan


async def draft_plan(
    session: AsyncSession,
    incident: Incident,
    policy: RemediationPolicy,
    *,
    max_discount_ratio: str | None = None,
    oversold: Collection[str] = (),
    intended: Mapping[tuple[str, int], int | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PlanDraft:
    """The incident's plan: its affected orders re-priced and classified, plus the coupon claims
    refused on its campaigns in its window (re-issued), priced under the service's guard."""
    campaigns = {c for c, _ in incidents.versions_of(incident)}
    refused = await failed_claims(
        session, campaigns=campaigns, start=incident.window_start, end=incident.window_end
    )
    pricing = (
        None
        if max_discount_ratio is None
        else PricingPolicy(max_discount_ratio=Decimal(max_discount_ratio))
    )
    return await build_plan(
        session,
        incident,
        policy,
        intended,
        pricing=pricing,
        oversold=oversold,
        failed_claims=refused,
        progress=progress,
    )


async def save_draft(
    session: AsyncSession, draft: PlanDraft, *, actor: str, now: datetime
) -> RemediationPlan:
    """Store ``draft`` as a plan in ``draft`` state and link it to its incident."""
    summary = draft.as_dict()
    del summary["items"]
    plan = RemediationPlan(
        incident_id=draft.incident_id,
        status=PlanStatus.DRAFT,
        severity=draft.severity,
        policy=draft.policy.model_dump(mode="json"),
        summary=summary,
        items_total=len(draft.items),
        refund_total=draft.refund_total,
        created_by=actor,
        created_at=now,
        decision_reason="",
    )
    session.add(plan)
    await session.flush()
    for start in range(0, len(draft.items), _CHUNK):
        rows = [
            {
                "plan_id": plan.id,
                "order_id": item.order_id,
                "claim_id": item.claim_id,
                "customer_id": item.customer_id,
                "klass": item.klass,
                "action": item.action,
                "cause": item.cause,
                "idempotency_key": item.idempotency_key,
                "currency": item.currency,
                "difference": item.difference,
                "refund": item.refund,
                "lines": [line._asdict() for line in item.lines],
                "coupon": item.as_dict()["coupon"],
                "reason": item.reason[:500],
                "status": ItemStatus.PLANNED.value,
                "updated_at": now,
            }
            for item in draft.items[start : start + _CHUNK]
        ]
        await session.execute(upsert_insert(session)(RemediationItem).values(rows))
    incident = await incidents.get(session, draft.incident_id, lock=True)
    incident.plan_id = str(plan.id)
    incidents.add_event(
        session,
        incident,
        actor=actor,
        kind="plan",
        message=f"remediation plan {plan.id} drafted: {len(draft.items)} items, "
        f"{format_minor(draft.refund_total)} to refund",
        now=now,
        detail={"plan_id": plan.id, "by_action": summary["by_action"]},
    )
    return plan


async def decide(
    session: AsyncSession,
    plan: RemediationPlan,
    *,
    approve: bool,
    actor: str,
    owner: str | None,
    reason: str,
    now: datetime,
) -> None:
    """Approve or reject a draft. ``owner`` is the person behind the deciding key (an author's
    other keys may not approve their plan either)."""
    if plan.status != PlanStatus.DRAFT:
        raise ConflictError("plan_decided", f"plan {plan.id} is {plan.status}, not a draft")
    if approve:
        author = await session.get(ApiKey, plan.created_by)
        same_owner = bool(owner) and author is not None and author.owner == owner
        if actor == plan.created_by or same_owner:
            raise ForbiddenError("own_plan", "a plan is approved by someone other than its author")
    plan.status = PlanStatus.APPROVED if approve else PlanStatus.REJECTED
    plan.decided_by, plan.decided_at, plan.decision_reason = actor, now, reason[:1000]
    incident = await incidents.get(session, plan.incident_id, lock=True)
    incidents.add_event(
        session,
        incident,
        actor=actor,
        kind="plan",
        message=f"remediation plan {plan.id} {'approved' if approve else 'rejected'}"
        + (f": {reason}" if reason else ""),
        now=now,
        detail={"plan_id": plan.id, "approved": approve},
    )


# -- execution --------------------------------------------------------------------------------


async def _items(
    session: AsyncSession, plan_id: int, *, status: str, where: Sequence[Any] = ()
) -> list[RemediationItem]:
    rows = await session.scalars(
        select(RemediationItem)
        .where(RemediationItem.plan_id == plan_id, RemediationItem.status == status, *where)
        .order_by(RemediationItem.id)
    )
    return list(rows.all())


def _compensation_spec(
    plan: RemediationPlan, coupon: dict[str, Any], count: int, now: datetime
) -> dict[str, Any]:
    """The coupon campaign of one compensation shape of a plan."""
    value, min_spend, days = coupon["value"], coupon["min_spend"], coupon["valid_days"]
    return {
        "id": f"comp-p{plan.id}-{value}-{min_spend}-{days}",
        "kind": "coupon",
        "name": f"补偿券 compensation (plan {plan.id})",
        "scope": {"all_items": True},
        "benefit": "threshold" if min_spend else "no_threshold",
        "min_spend": min_spend,
        "discount": value,
        "per_user_limit": 10_000,
        "quantity": count,
        "valid_from": now.isoformat(),
        "valid_until": (now + timedelta(days=days)).isoformat(),
    }


async def _give_coupons(
    session: AsyncSession, plan: RemediationPlan, items: list[RemediationItem], now: datetime
) -> None:
    """Give each item's coupon once: a compensation coupon (a campaign per shape) or a failed
    claim's coupon re-issued from its own campaign; ids from the items' keys."""
    wanting = [i for i in items if i.coupon is not None and i.coupon_id is None]
    groups: dict[str, list[RemediationItem]] = {}
    shapes: dict[str, dict[str, Any]] = {}
    for item in wanting:
        coupon: dict[str, Any] = item.coupon  # type: ignore[assignment]
        campaign_id = coupon.get("campaign_id")
        if not campaign_id:
            campaign_id = _compensation_spec(plan, coupon, 0, now)["id"]
            shapes[campaign_id] = coupon
        groups.setdefault(campaign_id, []).append(item)
    for campaign_id, members in sorted(groups.items()):
        holders = []
        for item in members:
            item.coupon_id = str(uuid.uuid5(COUPON_NAMESPACE, item.idempotency_key))
            holders.append((item.coupon_id, item.customer_id))
        shape = shapes.get(campaign_id)
        await coupons.grant(
            session,
            campaign_id=campaign_id,
            spec=None if shape is None else _compensation_spec(plan, shape, len(members), now),
            holders=holders,
            actor=f"plan:{plan.id}",
            reason=f"coupons of remediation plan {plan.id}, approved by {plan.decided_by}",
            now=now,
        )


async def to_cancel(session: AsyncSession, plan: RemediationPlan) -> list[RemediationItem]:
    """The items whose order the policy cancels (still planned): the job cancels each through
    checkout (which gives back what the order held) before paying their refunds."""
    return await _items(
        session,
        plan.id,
        status=ItemStatus.PLANNED.value,
        where=[RemediationItem.action == "cancel_with_coupon"],
    )


def extension_spec(
    spec: dict[str, Any], campaign_id: str, count: int, days: int, now: datetime
) -> dict[str, Any] | None:
    """A coupon giving the campaign's intended offer for ``days`` days from the campaign's end
    (or from now, if it has ended), or None when the campaign has no end (nothing to extend) or
    its offer is not one a coupon can carry (only order-level 满减 and percent-off are)."""
    if not spec.get("valid_until"):
        return None
    start = max(now, datetime.fromisoformat(spec["valid_until"]))
    common = {
        "id": campaign_id,
        "kind": "coupon",
        "name": f"延期 extension of {spec.get('name') or spec['id']}",
        "scope": spec["scope"],
        "per_user_limit": 1,
        "quantity": count,
        "valid_from": start.isoformat(),
        "valid_until": (start + timedelta(days=days)).isoformat(),
    }
    if spec.get("kind") == "threshold" and not spec.get("repeat"):
        tier = spec["tiers"][0]
        return {
            **common,
            "benefit": "threshold",
            "min_spend": tier["min_spend"],
            "discount": tier["discount"],
        }
    if spec.get("kind") == "percent_off":
        extra = {"cap": spec["cap"]} if spec.get("cap") else {}
        return {
            **common,
            "benefit": "percent",
            "percent": spec["percent"],
            "min_spend": spec.get("min_spend", 0),
            **extra,
        }
    return None


async def _extend(session: AsyncSession, plan: RemediationPlan, now: datetime) -> None:
    """Extend each campaign the plan names for its affected customers: each gets a personal
    coupon with the intended offer (the version re-pricing used), valid the policy's days past
    the campaign's end. Done once per plan (``summary["extended"]``); a campaign without an end,
    or whose offer a coupon cannot carry, is noted instead."""
    extensions: dict[str, int] = plan.summary.get("extensions") or {}
    if not extensions or "extended" in plan.summary:
        return
    intended = {r["campaign_id"]: r["intended"] for r in plan.summary.get("replacements", [])}
    customers = sorted(
        set(
            (
                await session.scalars(
                    select(RemediationItem.customer_id).where(
                        RemediationItem.plan_id == plan.id,
                        RemediationItem.action.not_in(["none"]),
                    )
                )
            ).all()
        )
    )
    done: dict[str, Any] = {}
    for campaign, days in sorted(extensions.items()):
        version = intended.get(campaign)
        spec = None
        if version is not None and customers:
            row = await session.get(CampaignVersion, (campaign, version))
            coupon_id = f"ext-{campaign}-p{plan.id}"[:64]
            spec = (
                None
                if row is None
                else extension_spec(row.spec, coupon_id, len(customers), days, now)
            )
        if spec is None:
            done[campaign] = {
                "extended": 0,
                "note": "nothing to extend: the campaign has no end, or its intended offer is "
                "not one a coupon can carry",
            }
            continue
        await coupons.grant(
            session,
            campaign_id=spec["id"],
            spec=spec,
            holders=[
                (str(uuid.uuid5(COUPON_NAMESPACE, f"{spec['id']}:{customer}")), customer)
                for customer in customers
            ],
            actor=f"plan:{plan.id}",
            reason=f"{campaign} extended {days} days for plan {plan.id}'s customers",
            now=now,
        )
        done[campaign] = {"extended": len(customers), "coupon_campaign": spec["id"], "days": days}
    plan.summary = {**plan.summary, "extended": done}


async def prepare(session: AsyncSession, plan: RemediationPlan, *, now: datetime) -> list[int]:
    """Make the plan executable (idempotent); returns the payout ids it has to pay."""
    if plan.status not in (PlanStatus.APPROVED, PlanStatus.EXECUTING, PlanStatus.DONE):
        raise ConflictError(
            "plan_not_approved", f"plan {plan.id} is {plan.status}: only an approved plan runs"
        )
    if plan.status == PlanStatus.APPROVED:
        plan.status = PlanStatus.EXECUTING
        plan.started_at = now
    planned = await _items(session, plan.id, status=ItemStatus.PLANNED.value)
    paying = [i for i in planned if i.refund > 0 and i.payout_id is None and i.order_id]
    for start in range(0, len(paying), _CHUNK):
        chunk = paying[start : start + _CHUNK]
        ids = await plan_payouts(
            session,
            items=[
                NewPayout(
                    order_id=i.order_id or "",
                    customer_id=i.customer_id,
                    cause=i.cause,
                    amount=i.refund,
                    currency=i.currency,
                )
                for i in chunk
            ],
            now=now,
        )
        for item in chunk:
            item.payout_id = ids[item.idempotency_key]
    await _give_coupons(session, plan, planned, now)
    await _extend(session, plan, now)
    for item in planned:
        if item.payout_id is None and item.action != "cancel_with_coupon":
            # Nothing to pay: the coupon is given, or the price is honoured.
            done = item.action not in ("none", "honour")
            item.status = ItemStatus.DONE if done else ItemStatus.SKIPPED
            item.updated_at = now
    payouts = await session.scalars(
        select(RemediationItem.payout_id).where(
            RemediationItem.plan_id == plan.id,
            RemediationItem.payout_id.is_not(None),
            RemediationItem.status == ItemStatus.PLANNED.value,
        )
    )
    return [p for p in payouts.all() if p is not None]


_FINAL = {
    PayoutStatus.SUCCEEDED.value: ItemStatus.DONE.value,
    PayoutStatus.FAILED.value: ItemStatus.FAILED.value,
    PayoutStatus.SKIPPED.value: ItemStatus.SKIPPED.value,
}


async def settle(session: AsyncSession, plan: RemediationPlan, *, now: datetime) -> bool:
    """Move items to their payouts' final states; True when the plan is done."""
    for payout_status, item_status in _FINAL.items():
        await session.execute(
            update(RemediationItem)
            .where(
                RemediationItem.plan_id == plan.id,
                RemediationItem.status == ItemStatus.PLANNED.value,
                RemediationItem.payout_id.in_(
                    select(Payout.id).where(Payout.status == payout_status)
                ),
            )
            .values(status=item_status, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    left = await session.scalar(
        select(func.count())
        .select_from(RemediationItem)
        .where(
            RemediationItem.plan_id == plan.id,
            RemediationItem.status == ItemStatus.PLANNED.value,
        )
    )
    if left or plan.status == PlanStatus.DONE:
        return plan.status == PlanStatus.DONE
    plan.status = PlanStatus.DONE
    plan.finished_at = now
    counts = await progress(session, plan)
    incident = await session.get(Incident, plan.incident_id, with_for_update=True)
    if incident is not None:
        incidents.add_event(
            session,
            incident,
            actor=f"plan:{plan.id}",
            kind="payouts",
            message=f"remediation plan {plan.id} done: {format_minor(counts['paid'])} paid in "
            f"{counts['items']['done']} items, {counts['items']['failed']} failed, "
            f"{counts['items']['skipped']} skipped",
            now=now,
            detail={"plan_id": plan.id, **counts},
        )
    return True


async def progress(session: AsyncSession, plan: RemediationPlan) -> dict[str, Any]:
    """Items by state, payouts by state and the money paid so far."""
    items = dict.fromkeys((s.value for s in ItemStatus), 0)
    rows = await session.execute(
        select(RemediationItem.status, func.count())
        .where(RemediationItem.plan_id == plan.id)
        .group_by(RemediationItem.status)
    )
    for status, count in rows.all():
        items[status] = count
    payouts = dict.fromkeys((s.value for s in PayoutStatus), 0)
    paid = 0
    money = await session.execute(
        select(Payout.status, func.count(), func.coalesce(func.sum(Payout.amount), 0))
        .join(RemediationItem, RemediationItem.payout_id == Payout.id)
        .where(RemediationItem.plan_id == plan.id)
        .group_by(Payout.status)
    )
    for status, count, amount in money.all():
        payouts[status] = count
        if status == PayoutStatus.SUCCEEDED.value:
            paid = int(amount)
    return {"items": items, "payouts": payouts, "paid": paid, "total": plan.items_total}
