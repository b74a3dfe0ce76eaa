"""Traffic sums older than PROMOGUARD_TRAFFIC_RETENTION_DAYS are deleted by the sweeper: in every
worker's periodic sweep and by ``promoguard sweep``, in batches, and never a newer minute. Runs on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from tests.service.conftest import SECRET, signed_client
from typer.testing import CliRunner

from promoguard.cli import app as cli
from promoguard.monitoring.models import CampaignTraffic, RouteTraffic
from promoguard.monitoring.retention import prune_old_traffic, prune_traffic
from promoguard.settings import Settings
from promoguard.store.db import Database

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
AGES = (400, 100, 91, 89, 1, 0)
"""Days before NOW of the minutes each table holds: with 90 days kept, the first three go."""

T = TypeVar("T")


def _run(url: str, scenario: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(url)
        try:
            return await scenario(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


async def _fill(db: Database, now: datetime = NOW) -> None:
    async with db.write() as session:
        for days in AGES:
            minute = now - timedelta(days=days)
            session.add(CampaignTraffic(campaign_id="mj", version=1, minute=minute, orders=1))
            session.add(CampaignTraffic(campaign_id="mj", version=2, minute=minute, orders=1))
            session.add(RouteTraffic(route="/v1/quotes", minute=minute, requests=1))


async def _ages(db: Database, now: datetime = NOW) -> dict[str, list[int]]:
    """Days before ``now`` of the minutes left, per table (campaign_traffic per version)."""
    async with db.read() as session:
        versions = (await session.execute(select(CampaignTraffic))).scalars().all()
        routes = (await session.scalars(select(RouteTraffic))).all()
    return {
        "v1": sorted((now - r.minute).days for r in versions if r.version == 1),
        "v2": sorted((now - r.minute).days for r in versions if r.version == 2),
        "routes": sorted((now - r.minute).days for r in routes),
    }


def test_minutes_older_than_the_retention_are_deleted_and_newer_ones_kept(database_url):
    async def scenario(db: Database) -> tuple[dict[str, int], dict[str, list[int]]]:
        await _fill(db)
        removed = await prune_old_traffic(db, NOW, 90)
        return removed, await _ages(db)

    removed, left = _run(database_url, scenario)

    assert removed == {"campaign_traffic_pruned": 6, "route_traffic_pruned": 3}
    assert left == {"v1": [0, 1, 89], "v2": [0, 1, 89], "routes": [0, 1, 89]}


def test_a_sweep_deletes_at_most_a_batch_per_table_and_the_next_one_goes_on(database_url):
    before = NOW - timedelta(days=90)

    async def prune(db: Database, batch: int) -> dict[str, int]:
        async with db.write() as session:
            return await prune_traffic(session, before, batch=batch)

    async def scenario(db: Database) -> list[Any]:
        await _fill(db)
        return [
            await prune(db, 4),
            await _ages(db),
            await prune(db, 4),
            await prune(db, 4),
            await _ages(db),
        ]

    first, middle, second, third, left = _run(database_url, scenario)

    assert first == {"campaign_traffic": 4, "route_traffic": 3}
    assert len(middle["v1"]) + len(middle["v2"]) == 8  # 12 rows, 4 deleted: all old ones
    assert [d for d in middle["v1"] if d < 90] == [d for d in middle["v2"] if d < 90] == [0, 1, 89]
    assert second == {"campaign_traffic": 2, "route_traffic": 0}
    assert third == {"campaign_traffic": 0, "route_traffic": 0}
    assert left == {"v1": [0, 1, 89], "v2": [0, 1, 89], "routes": [0, 1, 89]}


def test_a_retention_of_zero_days_keeps_every_minute(database_url):
    async def scenario(db: Database) -> tuple[dict[str, int], dict[str, list[int]]]:
        await _fill(db)
        return await prune_old_traffic(db, NOW, 0), await _ages(db)

    removed, left = _run(database_url, scenario)

    assert removed == {}
    assert left["routes"] == sorted(AGES)
    assert left["v1"] == left["v2"] == sorted(AGES)


def test_promoguard_sweep_prunes_with_the_configured_retention(database_url):
    _run(database_url, _fill)
    env = {
        "PROMOGUARD_DATABASE_URL": database_url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
        "PROMOGUARD_TRAFFIC_RETENTION_DAYS": "30",
    }

    swept = CliRunner().invoke(cli, ["sweep", "--at", NOW.isoformat()], env=env)

    assert swept.exit_code == 0, swept.output
    assert "campaign traffic pruned" in swept.output
    assert "route traffic pruned" in swept.output
    assert _run(database_url, _ages) == {"v1": [0, 1], "v2": [0, 1], "routes": [0, 1]}


def test_every_workers_sweeper_prunes_old_traffic(settings: Settings):
    now = datetime.now(UTC)
    _run(settings.database_url, lambda db: _fill(db, now))
    often = settings.model_copy(
        update={"sweep_interval_seconds": 0.05, "traffic_retention_days": 2}
    )
    pruned = {"v1": [0, 1], "v2": [0, 1], "routes": [0, 1]}
    with signed_client(often):
        deadline = time.monotonic() + 60
        left = _run(settings.database_url, lambda db: _ages(db, now))
        # Until every table is pruned: on PostgreSQL the two tables are read by two statements,
        # each its own snapshot, so one read may fall on either side of the sweeper's commit.
        while left != pruned and time.monotonic() < deadline:
            time.sleep(0.05)
            left = _run(settings.database_url, lambda db: _ages(db, now))

    assert left == pruned


@pytest.mark.parametrize("days", [-1, 36_501])
def test_a_retention_out_of_range_is_refused(days: int):
    with pytest.raises(ValidationError, match="traffic_retention_days"):
        Settings(traffic_retention_days=days)
