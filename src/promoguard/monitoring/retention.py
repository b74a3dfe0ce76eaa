"""How long the per-minute traffic sums are kept.

Every worker's watch adds rows to ``campaign_traffic`` (one per campaign version and minute) and
``route_traffic`` (one per route and minute) for as long as the shop runs: some 30,000 rows a
day for a few dozen routes. The sweeper (every ``PROMOGUARD_SWEEP_INTERVAL_SECONDS`` in each
worker, and ``promoguard sweep``) deletes the minutes older than
``PROMOGUARD_TRAFFIC_RETENTION_DAYS`` (90 by default, long enough for a sale's post-mortem; 0
keeps them for ever).

Each sweep deletes at most ``batch`` rows per table, found through the ``minute`` index
(migration 0013), so a write transaction stays short even when a long backlog is first pruned
(after an upgrade, or after the retention was shortened): later sweeps take the rest. Several
workers may prune at once: a row deleted twice is simply not there the second time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import delete, select, tuple_
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import class_mapper

from promoguard.monitoring.models import CampaignTraffic, RouteTraffic
from promoguard.store.db import Database

__all__ = ["PRUNE_BATCH", "prune_old_traffic", "prune_traffic", "retention_cutoff"]

PRUNE_BATCH = 10_000
"""Rows deleted at most per table in one sweep: at a sweep every 30 s, 1.2 M rows an hour."""


def retention_cutoff(now: datetime, days: int) -> datetime | None:
    """The first minute kept when sums are kept ``days`` days (None: ``days`` is 0, keep all)."""
    return now - timedelta(days=days) if days > 0 else None


async def prune_traffic(
    session: AsyncSession, before: datetime, *, batch: int = PRUNE_BATCH
) -> dict[str, int]:
    """Delete up to ``batch`` rows of each traffic table whose minute is before ``before``.

    Returns:
        Rows deleted per table name (the caller commits).
    """
    removed: dict[str, int] = {}
    for model in (CampaignTraffic, RouteTraffic):
        key = class_mapper(model).primary_key
        old = select(*key).where(model.minute < before).limit(batch)
        result = await session.execute(delete(model).where(tuple_(*key).in_(old)))
        removed[model.__tablename__] = cast(CursorResult[Any], result).rowcount
    return removed


async def prune_old_traffic(db: Database, now: datetime, days: int) -> dict[str, int]:
    """One sweep's pruning, in a write transaction of its own: ``{"<table>_pruned": rows}``
    (empty when ``days`` is 0)."""
    before = retention_cutoff(now, days)
    if before is None:
        return {}
    async with db.write() as session:
        removed = await prune_traffic(session, before)
    return {f"{table}_pruned": rows for table, rows in removed.items()}
