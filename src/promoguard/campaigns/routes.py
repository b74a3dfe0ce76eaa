"""``/v1/campaigns``: create, read, list, new version; lint, submit, approve, diff, simulate;
activate (now or scheduled, at a rollout percentage), rollout, rollback, pause, end; timeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.api import PROBLEMS, Actor, Services, Svc, allow, now
from promoguard.audit import AuditEntry
from promoguard.campaigns import catalogue, flows, review, service
from promoguard.campaigns.models import Approval, Campaign, CampaignStatus, CampaignVersion
from promoguard.errors import NotFoundError
from promoguard.promotions.catalogue import Catalogue
from promoguard.security.context import current
from promoguard.security.keys import Role

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=PROBLEMS)
catalogue_router = APIRouter(prefix="/v1/catalogue", tags=["catalogue"], responses=PROBLEMS)

MAX_VERSION = 2**31 - 1
"""Versions are INTEGER columns: a bigger number is refused (422) before it reaches the database."""


class CampaignIn(BaseModel):
    """A new campaign: its first rule spec (see ``promoguard schema``)."""

    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]
    name: str | None = Field(default=None, max_length=200)


class VersionIn(BaseModel):
    """A new version's rule spec; the server numbers it."""

    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]
    note: str = Field(default="", max_length=500)


RolloutPercent = Annotated[
    Decimal,
    Field(ge=0, le=100, decimal_places=2),
    # Documented as the string form only, so the schema says exactly what is accepted.
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(100(\.00?)?|[0-9]{1,2}(\.[0-9]{1,2})?)$",
            "description": 'percent of customers, 0 to 100 with at most two decimals: "12.5"',
        }
    ),
]


def _bps(percent: Decimal | None) -> int | None:
    return None if percent is None else int(percent * 100)


class ActivateIn(BaseModel):
    """Which version goes live (the latest when omitted), for what share of customers, when."""

    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    rollout_percent: RolloutPercent | None = Field(
        default=None, description="share of customers; unchanged when omitted (100 % at first)"
    )
    start_at: AwareDatetime | None = Field(
        default=None, description="go live at this time (scheduled) instead of now"
    )


class RolloutIn(BaseModel):
    """A new rollout percentage for the live version."""

    model_config = ConfigDict(extra="forbid")
    percent: RolloutPercent
    reason: str = Field(default="", max_length=500)


class SubmitIn(BaseModel):
    """A reason for every lint warning the author goes ahead with (warning code -> reason)."""

    model_config = ConfigDict(extra="forbid")
    acknowledgements: dict[
        Annotated[str, Field(max_length=64)], Annotated[str, Field(min_length=1, max_length=500)]
    ] = Field(default_factory=dict, max_length=100)


class DecisionIn(BaseModel):
    """One department's decision on a version under review."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject"]
    reason: str = Field(default="", max_length=500)


class SimulationIn(BaseModel):
    """Overrides for one simulation run."""

    model_config = ConfigDict(extra="forbid")
    expected_orders: int | None = Field(
        default=None, ge=0, le=10**9, description="orders in the window; default from history"
    )
    rollout_percent: RolloutPercent | None = None


class ReasonIn(BaseModel):
    """Why, for the timeline and the audit log."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


class VersionOut(BaseModel):
    """One immutable version."""

    campaign_id: str
    version: int
    state: str
    author: str
    note: str
    created_at: datetime
    spec: dict[str, Any]
    submitted_at: datetime | None = None
    findings: list[dict[str, Any]] | None = Field(
        default=None, description="lint findings: when the version was added, then at submission"
    )
    acknowledgements: dict[str, str] | None = None
    simulation: dict[str, Any] | None = None
    start_at: datetime | None = None


class CampaignOut(BaseModel):
    """A campaign and where it stands."""

    id: str
    name: str
    kind: str
    status: str
    live_version: int | None
    previous_version: int | None
    profile_version: int | None = Field(
        default=None, description="the version whose simulated profile monitoring expects"
    )
    rollout_bps: int = Field(description="share of customers the live version prices for, of 10000")
    latest_version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class CampaignPage(BaseModel):
    """One page of campaigns."""

    items: list[CampaignOut]
    total: int


def _out(campaign: Campaign) -> CampaignOut:
    return CampaignOut.model_validate(campaign, from_attributes=True)


async def _move(
    svc: Services, move: Callable[..., Awaitable[Campaign]], **args: Any
) -> CampaignOut:
    """Run a lifecycle move in its transaction, then tell every worker what is live now."""
    async with svc.db.write() as session:
        out = _out(await move(session, **args))
    await svc.live.announce()
    return out


def _version_out(version: CampaignVersion) -> VersionOut:
    return VersionOut.model_validate(version, from_attributes=True)


@router.post(
    "",
    status_code=201,
    summary="Create a campaign (draft, version 1)",
    dependencies=[allow(Role.OPERATOR, route="campaign_create")],
)
async def create(body: CampaignIn, svc: Svc, actor: Actor) -> CampaignOut:
    async with svc.db.write() as session:
        campaign, version = await service.create_campaign(
            session, spec=body.spec, author=actor, name=body.name
        )
        await _lint_new(session, svc, version)
        return _out(campaign)


async def _lint_new(session: AsyncSession, svc: Services, version: CampaignVersion) -> None:
    """Lint every new version at once, so its findings are on it before anyone submits it."""
    findings = await review.lint_version(
        session,
        campaign_id=version.campaign_id,
        version=version.version,
        config=review.lint_config(svc.settings),
        now=now(),
    )
    version.findings = [f.as_dict() for f in findings]


@router.get(
    "",
    summary="List campaigns",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, Role.AUDITOR, route="campaign_list")],
)
async def list_(
    svc: Svc,
    status: CampaignStatus | None = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> CampaignPage:
    async with svc.db.read() as session:
        rows, total = await service.list_campaigns(
            session, status=status, kind=kind, limit=limit, offset=offset
        )
        return CampaignPage(items=[_out(c) for c in rows], total=total)


@router.get(
    "/{campaign_id}",
    summary="Read a campaign",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, Role.AUDITOR, route="campaign_read")],
)
async def read(campaign_id: str, svc: Svc) -> CampaignOut:
    async with svc.db.read() as session:
        return _out(await service.get_campaign(session, campaign_id=campaign_id))


@router.get(
    "/{campaign_id}/versions",
    summary="Every version of a campaign",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, Role.AUDITOR, route="campaign_versions")],
)
async def versions(campaign_id: str, svc: Svc) -> list[VersionOut]:
    async with svc.db.read() as session:
        rows = await service.list_versions(session, campaign_id=campaign_id)
        return [_version_out(v) for v in rows]


@router.get(
    "/{campaign_id}/versions/{version}",
    summary="Read one version",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, Role.AUDITOR, route="campaign_version_read")],
)
async def read_version(
    campaign_id: str, version: Annotated[int, Path(ge=1, le=MAX_VERSION)], svc: Svc
) -> VersionOut:
    async with svc.db.read() as session:
        row = await service.get_version(session, campaign_id=campaign_id, version=version)
        return _version_out(row)


@router.post(
    "/{campaign_id}/versions",
    status_code=201,
    summary="Add a new version (draft)",
    dependencies=[allow(Role.OPERATOR, route="campaign_version_add")],
)
async def add_version(campaign_id: str, body: VersionIn, svc: Svc, actor: Actor) -> VersionOut:
    async with svc.db.write() as session:
        row = await service.new_version(
            session, campaign_id=campaign_id, spec=body.spec, author=actor, note=body.note
        )
        await _lint_new(session, svc, row)
        return _version_out(row)


@router.post(
    "/{campaign_id}/activate",
    summary="Make an approved version live now or at start_at (also resumes a paused one)",
    dependencies=[allow(Role.OPERATOR, route="campaign_activate")],
)
async def activate(campaign_id: str, body: ActivateIn, svc: Svc, actor: Actor) -> CampaignOut:
    return await _move(
        svc,
        flows.go_live,
        settings=svc.settings,
        campaign_id=campaign_id,
        version=body.version,
        actor=actor,
        now=now(),
        rollout_bps=_bps(body.rollout_percent),
        start_at=body.start_at,
    )


@router.post(
    "/{campaign_id}/rollout",
    summary="Change the share of customers the live version prices for",
    dependencies=[allow(Role.OPERATOR, route="campaign_rollout")],
)
async def rollout(campaign_id: str, body: RolloutIn, svc: Svc, actor: Actor) -> CampaignOut:
    return await _move(
        svc,
        service.set_rollout,
        campaign_id=campaign_id,
        rollout_bps=_bps(body.percent),
        actor=actor,
        reason=body.reason,
    )


class ProfileIn(BaseModel):
    """Which version's simulated profile monitoring should expect from now on, and why."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=MAX_VERSION)
    reason: str = Field(min_length=1, max_length=500)


@router.post(
    "/{campaign_id}/profile",
    summary="Adopt a version's simulated profile as what monitoring expects",
    dependencies=[allow(Role.OPERATOR, route="campaign_profile")],
)
async def adopt_profile(campaign_id: str, body: ProfileIn, svc: Svc, actor: Actor) -> CampaignOut:
    return await _move(
        svc,
        flows.adopt_profile,
        campaign_id=campaign_id,
        version=body.version,
        actor=actor,
        reason=body.reason,
    )


@router.post(
    "/{campaign_id}/rollback",
    summary="Make the version live before the current one live again",
    dependencies=[allow(Role.OPERATOR, route="campaign_rollback")],
)
async def rollback(campaign_id: str, body: ReasonIn, svc: Svc, actor: Actor) -> CampaignOut:
    return await _move(
        svc, service.rollback, campaign_id=campaign_id, actor=actor, reason=body.reason
    )


@router.post(
    "/{campaign_id}/pause",
    summary="Stop pricing with a campaign now",
    dependencies=[allow(Role.OPERATOR, route="campaign_pause")],
)
async def pause(campaign_id: str, body: ReasonIn, svc: Svc, actor: Actor) -> CampaignOut:
    return await _move(svc, service.pause, campaign_id=campaign_id, actor=actor, reason=body.reason)


@router.post(
    "/{campaign_id}/end",
    summary="End a campaign for good",
    dependencies=[allow(Role.OPERATOR, route="campaign_end")],
)
async def end(campaign_id: str, body: ReasonIn, svc: Svc, actor: Actor) -> CampaignOut:
    return await _move(svc, service.end, campaign_id=campaign_id, actor=actor, reason=body.reason)


VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]
_READERS = (Role.OPERATOR, Role.APPROVER, Role.AUDITOR)


class LintOut(BaseModel):
    """What lint says about a version now."""

    errors: int
    warnings: int
    findings: list[dict[str, Any]]


class ApprovalOut(BaseModel):
    """One department's decision."""

    department: str
    approver: str
    decision: str
    reason: str
    at: datetime


class ReviewOut(BaseModel):
    """A version's review: where it stands and each decision so far."""

    version: VersionOut
    required: list[str]
    approvals: list[ApprovalOut]


class DiffOut(BaseModel):
    """What a customer would see differently from ``before`` to ``after``."""

    campaign_id: str
    before: int
    after: int
    changes: list[dict[str, Any]]
    summary: list[str]


class TimelineEntry(BaseModel):
    """One thing that happened to the campaign."""

    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]


@router.get(
    "/{campaign_id}/versions/{version}/lint",
    summary="Lint a version against the live rules and the catalogue",
    dependencies=[allow(*_READERS, route="campaign_lint")],
)
async def lint_version(campaign_id: str, version: VersionNumber, svc: Svc) -> LintOut:
    async with svc.db.read() as session:
        findings = await review.lint_version(
            session,
            campaign_id=campaign_id,
            version=version,
            config=review.lint_config(svc.settings),
            now=now(),
        )
    errors = sum(f.severity == "error" for f in findings)
    return LintOut(
        errors=errors,
        warnings=len(findings) - errors,
        findings=[f.as_dict() for f in findings],
    )


@router.post(
    "/{campaign_id}/versions/{version}/submit",
    summary="Send a draft to review (lint errors block; warnings need a reason)",
    dependencies=[allow(Role.OPERATOR, route="campaign_submit")],
)
async def submit(
    campaign_id: str, version: VersionNumber, body: SubmitIn, svc: Svc, actor: Actor
) -> VersionOut:
    async with svc.db.write() as session:
        row, _ = await review.submit(
            session,
            campaign_id=campaign_id,
            version=version,
            actor=actor,
            acknowledgements=body.acknowledgements,
            config=review.lint_config(svc.settings),
            now=now(),
        )
        return _version_out(row)


def _review_out(row: CampaignVersion, decided: list[Approval], required: list[str]) -> ReviewOut:
    return ReviewOut(
        version=_version_out(row),
        required=required,
        approvals=[ApprovalOut.model_validate(a, from_attributes=True) for a in decided],
    )


@router.post(
    "/{campaign_id}/versions/{version}/approvals",
    summary="Approve or reject a version for the approver's department",
    dependencies=[allow(Role.APPROVER, route="campaign_approve")],
)
async def decide(
    campaign_id: str, version: VersionNumber, body: DecisionIn, svc: Svc, actor: Actor
) -> ReviewOut:
    principal = current.get()
    required: list[str] = list(svc.settings.review_departments)
    async with svc.db.write() as session:
        row, decided = await review.decide(
            session,
            campaign_id=campaign_id,
            version=version,
            approver=actor,
            department=None if principal is None else principal.department,
            owner="" if principal is None else principal.owner,
            approve=body.decision == "approve",
            reason=body.reason,
            required=required,
        )
        return _review_out(row, decided, required)


@router.get(
    "/{campaign_id}/versions/{version}/approvals",
    summary="A version's review: state, required departments and decisions",
    dependencies=[allow(*_READERS, route="campaign_approvals")],
)
async def approvals(campaign_id: str, version: VersionNumber, svc: Svc) -> ReviewOut:
    required: list[str] = list(svc.settings.review_departments)
    async with svc.db.read() as session:
        row = await service.get_version(session, campaign_id=campaign_id, version=version)
        decided = await review.approvals(session, campaign_id=campaign_id, version=version)
        return _review_out(row, decided, required)


@router.get(
    "/{campaign_id}/versions/{version}/diff",
    summary="What changes for customers between two versions",
    dependencies=[allow(*_READERS, route="campaign_diff")],
)
async def diff(
    campaign_id: str,
    version: VersionNumber,
    svc: Svc,
    against: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_VERSION,
            description="the other version; default the live one, else the one before",
        ),
    ] = None,
) -> DiffOut:
    async with svc.db.read() as session:
        campaign = await service.get_campaign(session, campaign_id=campaign_id)
        other = against or campaign.live_version or max(version - 1, 1)
        after = await service.get_version(session, campaign_id=campaign_id, version=version)
        before = await service.get_version(session, campaign_id=campaign_id, version=other)
        changes = review.diff_specs(before.spec, after.spec)
    return DiffOut(
        campaign_id=campaign_id,
        before=other,
        after=version,
        changes=[c.as_dict() for c in changes],
        summary=[c.sentence() for c in changes],
    )


@router.post(
    "/{campaign_id}/versions/{version}/simulation",
    summary="Re-price recorded carts with and without this version; forecast its budget burn",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, route="campaign_simulate")],
)
async def simulation(
    campaign_id: str, version: VersionNumber, body: SimulationIn, svc: Svc
) -> dict[str, Any]:
    async with svc.db.write() as session:
        report = await flows.simulate_version(
            session,
            settings=svc.settings,
            campaign_id=campaign_id,
            version=version,
            now=now(),
            rollout_bps=_bps(body.rollout_percent),
            expected_orders=body.expected_orders,
        )
        if report is None:
            raise NotFoundError(
                "nothing_to_simulate",
                "there are no recorded orders and no catalogue to build a sample from: "
                "load a catalogue (PUT /v1/catalogue) first",
            )
        return report.as_dict()


@router.get(
    "/{campaign_id}/timeline",
    summary="Every change to the campaign, oldest first (from the audit log)",
    dependencies=[allow(*_READERS, route="campaign_timeline")],
)
async def timeline(
    campaign_id: str,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[TimelineEntry]:
    async with svc.db.read() as session:
        await service.get_campaign(session, campaign_id=campaign_id)
        rows = await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.subject_type == "campaign", AuditEntry.subject_id == campaign_id)
            .order_by(AuditEntry.id)
            .limit(limit)
        )
        return [TimelineEntry.model_validate(r, from_attributes=True) for r in rows.all()]


class CatalogueOut(BaseModel):
    """The stored catalogue in brief."""

    items: int
    categories: list[str]
    member_tiers: list[str]
    currency: str


@catalogue_router.put(
    "",
    summary="Replace the catalogue lint and simulation check rules against",
    dependencies=[allow(Role.OPERATOR, route="catalogue_put")],
)
async def put_catalogue(body: Catalogue, svc: Svc, actor: Actor) -> CatalogueOut:
    async with svc.db.write() as session:
        await catalogue.put_catalogue(session, catalogue=body, actor=actor)
    return _catalogue_out(body)


@catalogue_router.get(
    "",
    summary="The stored catalogue in brief",
    dependencies=[allow(*_READERS, route="catalogue_read")],
)
async def read_catalogue(svc: Svc) -> CatalogueOut:
    async with svc.db.read() as session:
        found = await catalogue.get_catalogue(session)
    if found is None:
        raise NotFoundError("catalogue_not_found", "no catalogue has been loaded yet")
    return _catalogue_out(found)


def _catalogue_out(found: Catalogue) -> CatalogueOut:
    return CatalogueOut(
        items=len(found.items),
        categories=sorted(found.categories),
        member_tiers=sorted(found.member_tiers),
        currency=found.currency,
    )
