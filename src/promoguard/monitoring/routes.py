"""``/v1/alerts``: what the detectors raised, newest first, and what each alert did."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from promoguard.api import PROBLEMS, Svc, allow
from promoguard.money import BPS_WHOLE
from promoguard.monitoring.models import AlertRecord
from promoguard.monitoring.traffic import series, window
from promoguard.security.keys import Role

router = APIRouter(prefix="/v1/alerts", tags=["monitoring"], responses=PROBLEMS)
traffic_router = APIRouter(prefix="/v1/campaigns", tags=["monitoring"], responses=PROBLEMS)


class AlertOut(BaseModel):
    """One alert."""

    id: int
    rule: str
    detector: str
    severity: str
    subject: str
    campaign_id: str | None
    version: int | None
    value: str
    threshold: str
    message: str
    actions: list[str]
    outcome: dict[str, Any]
    fired_at: datetime


@router.get(
    "",
    summary="Alerts, newest first",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, Role.AUDITOR, route="alerts_read")],
)
async def alerts(
    svc: Svc,
    campaign_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertOut]:
    query = select(AlertRecord).order_by(AlertRecord.id.desc()).limit(limit)
    if campaign_id is not None:
        query = query.where(AlertRecord.campaign_id == campaign_id)
    async with svc.db.read() as session:
        rows = await session.scalars(query)
        return [AlertOut.model_validate(r, from_attributes=True) for r in rows.all()]


class TrafficOut(BaseModel):
    """One campaign version's minute, summed over every worker."""

    minute: datetime
    version: int
    orders: int
    list_total: int
    discount: int
    rate_bps: int = Field(description="realised discount rate: discount over list, basis points")


@traffic_router.get(
    "/{campaign_id}/traffic",
    summary="A campaign's orders, discount and realised discount rate per minute",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, Role.AUDITOR, route="traffic_read")],
)
async def traffic(
    campaign_id: Annotated[str, Path(max_length=64)],
    svc: Svc,
    minutes: Annotated[int, Query(ge=1, le=10_080)] = 60,
) -> list[TrafficOut]:
    async with svc.db.read() as session:
        rows = await series(session, campaign_id, since=window(minutes))
    return [
        TrafficOut(
            minute=r.minute,
            version=r.version,
            orders=r.orders,
            list_total=r.list_total,
            discount=r.discount,
            rate_bps=r.discount * BPS_WHOLE // r.list_total if r.list_total else 0,
        )
        for r in rows
    ]
