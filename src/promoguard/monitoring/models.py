"""Monitoring's tables: every alert a detector raised (and what was done about it), each
campaign version's traffic per minute and each route's requests per minute (both flushed by
every worker's watch)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["LATENCY_BOUNDS_MS", "AlertRecord", "CampaignTraffic", "RouteTraffic"]

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class AlertRecord(Base):
    """One alert: the rule that fired, on what, how far over its threshold, and the actions."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    detector: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(4))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    campaign_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    version: Mapped[int | None] = mapped_column(Integer, default=None)
    value: Mapped[str] = mapped_column(String(40))
    threshold: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(String(500))
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)
    """The actions the rule asks for."""
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What each action did: ``{"pause": "paused", "incident": "requested", ...}``."""
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class CampaignTraffic(Base):
    """What a campaign version did per minute, summed over every worker: orders it discounted,
    their list total and its own discount (the realised discount rate is discount / list)."""

    __tablename__ = "campaign_traffic"

    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True, index=True)
    """Indexed on its own too (migration 0013): the sweeper deletes the minutes past the
    retention (:mod:`promoguard.monitoring.retention`)."""
    orders: Mapped[int] = mapped_column(Integer, default=0)
    list_total: Mapped[int] = mapped_column(_BIGINT, default=0)
    discount: Mapped[int] = mapped_column(_BIGINT, default=0)
    guard_trips: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Times the guard cut this version's discount in quotes priced that minute (migration 0012;
    a minute may have trips and no orders)."""


LATENCY_BOUNDS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds of the latency buckets of :class:`RouteTraffic` (the last bucket is above
10 s). Fixed: the columns are named after them, so other bounds need a migration."""


class RouteTraffic(Base):
    """What one route (its path template, as the metrics label it) answered per minute, summed
    over every worker: requests, 4xx and 5xx answers, and how many took at most each bound of
    :data:`LATENCY_BOUNDS_MS` (counts per bucket, not cumulative), from which p99 is read."""

    __tablename__ = "route_traffic"

    route: Mapped[str] = mapped_column(String(200), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True, index=True)
    """Indexed on its own too (migration 0013), for the sweeper's deletes."""
    requests: Mapped[int] = mapped_column(Integer, default=0)
    client_errors: Mapped[int] = mapped_column(Integer, default=0)
    server_errors: Mapped[int] = mapped_column(Integer, default=0)
    le_1ms: Mapped[int] = mapped_column(Integer, default=0)
    le_2ms: Mapped[int] = mapped_column(Integer, default=0)
    le_5ms: Mapped[int] = mapped_column(Integer, default=0)
    le_10ms: Mapped[int] = mapped_column(Integer, default=0)
    le_25ms: Mapped[int] = mapped_column(Integer, default=0)
    le_50ms: Mapped[int] = mapped_column(Integer, default=0)
    le_100ms: Mapped[int] = mapped_column(Integer, default=0)
    le_250ms: Mapped[int] = mapped_column(Integer, default=0)
    le_500ms: Mapped[int] = mapped_column(Integer, default=0)
    le_1000ms: Mapped[int] = mapped_column(Integer, default=0)
    le_2500ms: Mapped[int] = mapped_column(Integer, default=0)
    le_5000ms: Mapped[int] = mapped_column(Integer, default=0)
    le_10000ms: Mapped[int] = mapped_column(Integer, default=0)
    over_10000ms: Mapped[int] = mapped_column(Integer, default=0)
