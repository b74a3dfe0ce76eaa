"""``/v1/campaigns``: create, read, list, new version, activate / pause / end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from promoguard.api import PROBLEMS, Actor, Services, Svc, allow
from promoguard.campaigns import service
from promoguard.campaigns.models import Campaign, CampaignStatus, CampaignVersion
from promoguard.security.keys import Role

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=PROBLEMS)

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


class ActivateIn(BaseModel):
    """Which version goes live (the latest when omitted)."""

    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)


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


class CampaignOut(BaseModel):
    """A campaign and where it stands."""

    id: str
    name: str
    kind: str
    status: str
    live_version: int | None
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
        campaign, _ = await service.create_campaign(
            session, spec=body.spec, author=actor, name=body.name
        )
        return _out(campaign)


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
        return _version_out(row)


@router.post(
    "/{campaign_id}/activate",
    summary="Make a version live (rollback: an older one)",
    dependencies=[allow(Role.OPERATOR, route="campaign_activate")],
)
async def activate(campaign_id: str, body: ActivateIn, svc: Svc, actor: Actor) -> CampaignOut:
    return await _move(
        svc, service.activate, campaign_id=campaign_id, version=body.version, actor=actor
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
