"""Remediation plans over HTTP: draft one for an incident, read it (with progress and items),
approve or reject it, execute it as a background job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import select

from promoguard.api import PROBLEMS, Actor, Svc, allow, not_bool, now
from promoguard.incidents import service as incidents
from promoguard.plans import service
from promoguard.plans.jobs import PlanQueue
from promoguard.plans.models import RemediationItem, RemediationPlan
from promoguard.remediation.policy import RemediationPolicy
from promoguard.security.context import current
from promoguard.security.keys import Role

router = APIRouter(tags=["remediation"], responses=PROBLEMS)

_READERS = (Role.OPERATOR, Role.APPROVER, Role.AUDITOR)
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


class IntendedIn(BaseModel):
    """The version a faulty version should have been (None: the campaign should not have run)."""

    model_config = ConfigDict(extra="forbid")
    campaign_id: str = Field(min_length=1, max_length=64)
    faulty: Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(not_bool)]
    intended: Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(not_bool)] | None


class DraftIn(BaseModel):
    """What the store cannot know: orders the shop cannot deliver, and the version each faulty
    one should have been (default: the campaign's previous live version)."""

    model_config = ConfigDict(extra="forbid")
    oversold: list[Annotated[str, Field(min_length=1, max_length=36)]] = Field(
        default_factory=list, max_length=100_000, description="order ids: full refund + coupon"
    )
    intended: list[IntendedIn] = Field(default_factory=list, max_length=100)


class DecisionIn(BaseModel):
    """Approve or reject a draft plan."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject"]
    reason: str = Field(default="", max_length=1000)


class PlanOut(BaseModel):
    """A plan, its totals and how far its execution is."""

    id: int
    incident_id: int
    status: str
    severity: str
    policy: dict[str, Any]
    summary: dict[str, Any]
    items_total: int
    refund_total: int
    created_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any]


class ItemOut(BaseModel):
    """One action of a plan."""

    id: int
    order_id: str | None
    customer_id: str
    klass: str
    action: str
    cause: str
    idempotency_key: str
    difference: int
    refund: int
    lines: list[dict[str, Any]]
    coupon: dict[str, Any] | None
    reason: str
    status: str
    payout_id: int | None
    coupon_id: str | None
    error: str | None


async def _out(session: Any, plan: RemediationPlan) -> PlanOut:
    columns = {c.key: getattr(plan, c.key) for c in RemediationPlan.__table__.columns}
    return PlanOut.model_validate({**columns, "progress": await service.progress(session, plan)})


def _queue(request: Request) -> PlanQueue:
    queue: PlanQueue | None = getattr(request.app.state, "plan_queue", None)
    if queue is None:
        queue = request.app.state.plan_queue = PlanQueue(request.app.state.services.settings)
    return queue


@router.post(
    "/v1/incidents/{incident_id}/plans",
    status_code=201,
    summary="Draft the remediation plan of an incident (find, re-price, classify)",
    dependencies=[allow(Role.OPERATOR, route="plan_draft")],
)
async def draft(incident_id: Id, svc: Svc, actor: Actor, body: DraftIn | None = None) -> PlanOut:
    body = body or DraftIn()
    policy = RemediationPolicy.model_validate(svc.settings.remediation_policy)
    intended = {(i.campaign_id, i.faulty): i.intended for i in body.intended} or None
    async with svc.db.read() as session:
        incident = await incidents.get(session, incident_id)
        built = await service.draft_plan(
            session,
            incident,
            policy,
            max_discount_ratio=svc.settings.max_discount_ratio,
            oversold=set(body.oversold),
            intended=intended,
        )
    async with svc.db.write() as session:
        plan = await service.save_draft(session, built, actor=actor, now=now())
        return await _out(session, plan)


@router.get(
    "/v1/plans/{plan_id}",
    summary="A plan with its totals and progress",
    dependencies=[allow(*_READERS, route="plans_read")],
)
async def read(plan_id: Id, svc: Svc) -> PlanOut:
    async with svc.db.read() as session:
        return await _out(session, await service.get_plan(session, plan_id))


@router.get(
    "/v1/plans/{plan_id}/items",
    summary="A plan's items (per order: class, action, per-line amounts, state)",
    dependencies=[allow(*_READERS, route="plans_read")],
)
async def items(
    plan_id: Id,
    svc: Svc,
    status: Annotated[Literal["planned", "done", "failed", "skipped"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> list[ItemOut]:
    query = (
        select(RemediationItem)
        .where(RemediationItem.plan_id == plan_id, RemediationItem.id > after)
        .order_by(RemediationItem.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(RemediationItem.status == status)
    async with svc.db.read() as session:
        await service.get_plan(session, plan_id)
        rows = await session.scalars(query)
        return [ItemOut.model_validate(r, from_attributes=True) for r in rows.all()]


@router.post(
    "/v1/plans/{plan_id}/decision",
    summary="Approve or reject a draft plan (not its author)",
    dependencies=[allow(Role.APPROVER, Role.OPERATOR, route="plan_decide")],
)
async def decide(plan_id: Id, body: DecisionIn, svc: Svc, actor: Actor) -> PlanOut:
    principal = current.get()
    async with svc.db.write() as session:
        plan = await service.get_plan(session, plan_id, lock=True)
        await service.decide(
            session,
            plan,
            approve=body.decision == "approve",
            actor=actor,
            owner=None if principal is None else principal.owner,
            reason=body.reason,
            now=now(),
        )
        return await _out(session, plan)


@router.post(
    "/v1/plans/{plan_id}/execute",
    status_code=202,
    summary="Execute an approved plan as a background job (progress on GET)",
    dependencies=[allow(Role.OPERATOR, route="plan_execute")],
)
async def execute(plan_id: Id, svc: Svc, request: Request) -> PlanOut:
    async with svc.db.read() as session:
        plan = await service.get_plan(session, plan_id)
        if plan.status not in ("approved", "executing"):
            from promoguard.errors import ConflictError  # noqa: PLC0415

            raise ConflictError(
                "plan_not_approved", f"plan {plan_id} is {plan.status}: only an approved plan runs"
            )
        out = await _out(session, plan)
    _queue(request).enqueue(plan_id)
    return out
