"""``/v1/alerts``: what the detectors raised, newest first, and what each alert did."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from promoguard.api import PROBLEMS, Svc, allow
from promoguard.monitoring.models import AlertRecord
from promoguard.security.keys import Role

router = APIRouter(prefix="/v1/alerts", tags=["monitoring"], responses=PROBLEMS)


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
