"""``/v1/alerts``: what the detectors raised, newest first, and what each alert did; the
stored per-minute traffic of campaigns and of routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from promoguard.api import PROBLEMS, Svc, allow
from promoguard.money import BPS_WHOLE
from promoguard.monitoring.models import AlertRecord
from promoguard.monitoring.route_traffic import BUCKETS, buckets_of, quantile_ms, route_series
from promoguard.monitoring.traffic import series, window
from promoguard.security.keys import Role

router = APIRouter(prefix="/v1/alerts", tags=["monitoring"], responses=PROBLEMS)
traffic_router = APIRouter(prefix="/v1/campaigns", tags=["monitoring"], responses=PROBLEMS)
routes_router = APIRouter(prefix="/v1/traffic", tags=["monitoring"], responses=PROBLEMS)


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
    guard_trips: int = Field(description="times the guard cut this version's discount in quotes")


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
            guard_trips=r.guard_trips,
        )
        for r in rows
    ]


class RouteTrafficOut(BaseModel):
    """One route's minute, summed over every worker."""

    minute: datetime
    route: str = Field(description="the route's path template, e.g. /v1/quotes")
    requests: int
    client_errors: int = Field(description="4xx answers")
    server_errors: int = Field(description="5xx answers")
    error_rate_bps: int = Field(description="5xx answers over requests, basis points")
    p99_ms: float | None = Field(description="99th percentile latency from the buckets, ms")
    latency_buckets: dict[str, int] = Field(
        description="requests per latency bucket: le_1ms … le_10000ms (at most that long, "
        "above the previous bound), over_10000ms"
    )


@routes_router.get(
    "/routes",
    summary="Every route's requests, 4xx, 5xx, error rate and p99 latency per minute",
    dependencies=[allow(Role.OPERATOR, Role.APPROVER, Role.AUDITOR, route="traffic_read")],
)
async def route_traffic(
    svc: Svc,
    minutes: Annotated[int, Query(ge=1, le=10_080)] = 60,
) -> list[RouteTrafficOut]:
    async with svc.db.read() as session:
        rows = await route_series(session, since=window(minutes))
    found = []
    for r in rows:
        buckets = buckets_of(r)
        found.append(
            RouteTrafficOut(
                minute=r.minute,
                route=r.route,
                requests=r.requests,
                client_errors=r.client_errors,
                server_errors=r.server_errors,
                error_rate_bps=r.server_errors * BPS_WHOLE // r.requests if r.requests else 0,
                p99_ms=quantile_ms(buckets),
                latency_buckets=dict(zip(BUCKETS, buckets, strict=True)),
            )
        )
    return found
